"""Runs the pipeline on this machine with LocalDagRunner: `python -m pipelines.local_runner`.

Called by `make pipeline PROFILE=...` and by the end-to-end tests. It resolves paths from
the profile, makes sure the dataset is there, and hands everything to create_pipeline.
ML Metadata lives in `<output root>/metadata.db` (sqlite); TFX caching is on by default.
The steps themselves record the run in MLflow (components/tracked.py); this runner only
reads back which MLflow run that was, for the closing summary, and after a failure runs the
pipeline's exit handler (components/run_end), as Vertex AI does and LocalDagRunner does not.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import shlex
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from configs import Config
from configs.cli import add_config_arguments, config_from_args, quiet_third_party_noise
from configs.console import StepLines, quiet_native_logs, setup_console


@dataclass(frozen=True)
class RunPaths:
    pipeline_root: Path
    metadata_path: Path
    # Filled in by `run`: the TFX run id (a pipeline_run context in ML Metadata) and the
    # MLflow run that records it.
    pipeline_run_id: str | None = None
    mlflow_run_id: str | None = None
    steps: tuple[tuple[str, float], ...] = ()  # (node id, seconds) of each step that ran


def log_file_path(config: Config, when: float) -> Path:
    """The run's full log: <output root>/logs/<pipeline>-<local time>.log."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(when))
    return config.output_root / "logs" / f"{config.pipeline.name}-{stamp}.log"


def run_paths(config: Config) -> RunPaths:
    root = config.output_root
    return RunPaths(pipeline_root=root / "tfx", metadata_path=root / "metadata.db")


def run(config: Config) -> RunPaths:
    """Prepare the data, then run the whole pipeline; raises when a component fails."""
    # Heavy imports (TFX, MLflow) here, not at module import: `--help` stays instant, and
    # after the dataset check, so a run without data stops within seconds.
    from data.fingerprint import fingerprint
    from data.layout import available_splits
    from data.resolve import ensure_dataset

    log = logging.getLogger("pipelines.local_runner")
    paths = run_paths(config)
    paths.pipeline_root.mkdir(parents=True, exist_ok=True)
    started, started_at = time.monotonic(), time.time()
    try:
        data_dir = ensure_dataset(config)
    except Exception as e:
        log.error("no dataset, so the pipeline does not start: %s", e)
        raise
    from tfx import v1 as tfx

    from pipelines.pipeline import create_pipeline
    from tracking.run_record import find_run_id

    data_hash = fingerprint(data_dir)
    log.info("dataset %s (sha256 %s…) ready in %.1f s", data_dir, data_hash[:12], time.monotonic() - started)
    splits = available_splits(data_dir, config.data.splits)
    for role in (config.data.train_split, config.data.eval_split):
        if role not in splits:
            raise FileNotFoundError(f"{data_dir} has no split file for the {role!r} split")
    pipeline = create_pipeline(
        config,
        data_dir=data_dir,
        splits=splits,
        data_fingerprint=data_hash,
        pipeline_root=paths.pipeline_root,
        metadata_path=paths.metadata_path,
    )
    step_lines = StepLines(len(pipeline.components), logging.getLogger("pipelines.steps"))
    logging.getLogger().addHandler(step_lines)
    try:
        tfx.orchestration.LocalDagRunner().run(pipeline)
    except BaseException as e:
        run_exit_handler(config, paths.metadata_path, started_at, e)
        raise
    finally:
        logging.getLogger().removeHandler(step_lines)
    log.info("pipeline %s finished in %.1f s", config.pipeline.name, time.monotonic() - started)
    run_id = find_run_id(paths.metadata_path, config.pipeline.name, since_ms=int(started_at * 1000) - 1000)
    return dataclasses.replace(paths, pipeline_run_id=run_id, mlflow_run_id=mlflow_run_of(config, run_id),
                               steps=tuple(step_lines.steps))


def run_exit_handler(config: Config, metadata_path: Path, started_at: float, error: BaseException) -> None:
    """What Vertex AI does after a failed DAG, which LocalDagRunner cannot: run the
    pipeline's exit handler (components/run_end), so the run's MLflow run ends FAILED (KILLED
    on Ctrl-C) with the error even when a step before the Trainer failed, before any step
    had logged. A step that logs and failed has already ended it with its own error."""
    import json

    from components.run_end.component import end_run
    from tracking.lifecycle import settings_of
    from tracking.run_record import find_run_id

    log = logging.getLogger("pipelines.local_runner")
    try:
        run_id = find_run_id(metadata_path, config.pipeline.name, since_ms=int(started_at * 1000) - 1000)
        if run_id is None:  # no step was registered: TFX failed before the pipeline ran
            return
        state = "CANCELLED" if isinstance(error, KeyboardInterrupt) else "FAILED"
        final_status = {"state": state, "pipelineJobResourceName": run_id,
                        "error": {"message": f"{type(error).__name__}: {error}"}}
        end_run(json.dumps(final_status), json.dumps(settings_of(config).to_dict()))
    except Exception as e:  # noqa: BLE001 - the pipeline's own error is the one to raise
        log.warning("MLflow: could not record the failed run (%s: %s)", type(e).__name__, e)


def mlflow_run_of(config: Config, pipeline_run_id: str | None) -> str | None:
    """The MLflow run the steps recorded this pipeline run in (read only), or None: none
    when every step came from TFX's cache, so no step ran to log."""
    if pipeline_run_id is None:
        return None
    import mlflow

    from tracking.lifecycle import find_run_of, settings_of

    try:
        return find_run_of(mlflow.MlflowClient(config.mlflow_tracking_uri), settings_of(config).with_run_id(pipeline_run_id))
    except Exception as e:  # noqa: BLE001 - the run itself succeeded; only the summary lacks the id
        logging.getLogger("pipelines.local_runner").warning("MLflow: could not look up the run (%s: %s)", type(e).__name__, e)
        return None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.local_runner",
        description="Run the captioner TFX pipeline locally (LocalDagRunner, sqlite ML Metadata).",
    )
    add_config_arguments(parser)
    parser.add_argument("--verbose", action="store_true",
                        help="show every library's log lines too (TFX, absl, Beam, TensorFlow); the log file has them anyway")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_native_logs(args.verbose)
    quiet_third_party_noise()
    config = config_from_args(args)
    log_file = log_file_path(config, time.time())
    setup_console(log_file, verbose=args.verbose)
    log = logging.getLogger("pipelines.local_runner")
    log.info("pipeline %s (profile %s); the full log goes to %s", config.pipeline.name, args.profile, log_file)
    started = time.monotonic()
    try:
        paths = run(config)
    except Exception as e:  # noqa: BLE001 - one clear line for the user, details in the log file
        with open(log_file, "a", encoding="utf-8") as f:  # the traceback: in the file, not on screen
            f.write(traceback.format_exc())
        print(f"error: pipeline {config.pipeline.name} failed: {type(e).__name__}: {e}", file=sys.stderr)
        print(f"the full log: {log_file}", file=sys.stderr)
        return 1
    if config.mlflow.tracking_uri:
        ui = f"open {config.mlflow.tracking_uri}"
    elif args.overrides:
        ui = shlex.join([".venv/bin/python", "-m", "tracking.ui", "--profile", args.profile, *(f"--set={o}" for o in args.overrides)])
    else:
        ui = f"make mlflow-ui PROFILE={shlex.quote(args.profile)}"
    print(summary(config, paths, ui, log_file, time.monotonic() - started))
    return 0


def summary(config: Config, paths: RunPaths, mlflow_ui: str, log_file: Path, seconds: float) -> str:
    """The end of a successful run, for people: what it scored, decided and pushed, and what next."""
    from tracking.run_record import read_run_record
    from tracking.run_summary import summary_lines

    record = read_run_record(paths.metadata_path, config.pipeline.name, paths.pipeline_run_id)
    repo_root = Path(__file__).resolve().parent.parent
    lines = [f"pipeline {config.pipeline.name} succeeded in {seconds:.0f} s ({len(paths.steps)} steps); artifacts under {paths.pipeline_root}"]
    lines += summary_lines(record, config.push_dir, mlflow_ui, repo_root)
    if paths.mlflow_run_id:
        lines.append(f"MLflow run {paths.mlflow_run_id} in {config.mlflow_tracking_uri}; full log: {log_file}")
    else:
        lines.append(f"no MLflow run found for this pipeline run (every step that logs came from TFX's cache, "
                     f"or the lookup failed: see the log); full log: {log_file}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

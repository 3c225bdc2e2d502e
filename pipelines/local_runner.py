"""Runs the pipeline on this machine with LocalDagRunner: `python -m pipelines.local_runner`.

Called by `make pipeline PROFILE=...` and by the end-to-end tests. It resolves paths from
the profile, makes sure the dataset is there, and hands everything to create_pipeline.
ML Metadata lives in `<output root>/metadata.db` (sqlite); TFX caching is on by default.
Every run, failed ones included, is then recorded as one MLflow run (tracking/).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from configs import Config
from configs.cli import add_config_arguments, config_from_args, quiet_third_party_noise


@dataclass(frozen=True)
class RunPaths:
    pipeline_root: Path
    metadata_path: Path
    # Filled in by `run`: the TFX run id (a pipeline_run context in ML Metadata) and the
    # MLflow run that records it.
    pipeline_run_id: str | None = None
    mlflow_run_id: str | None = None


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
    started, started_at, data_hash = time.monotonic(), time.time(), None
    try:
        data_dir = ensure_dataset(config)
    except Exception as e:
        # Said at once: recording the failed run in MLflow takes a while longer.
        log.error("no dataset, so the pipeline does not start: %s", e)
        from tracking.mlflow_logger import track_pipeline_run

        track_pipeline_run(config, paths.metadata_path, started_at, data_hash, error=e)
        raise
    from tfx import v1 as tfx

    from pipelines.pipeline import create_pipeline
    from tracking.mlflow_logger import track_pipeline_run

    try:
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
        tfx.orchestration.LocalDagRunner().run(pipeline)
    except Exception as e:
        track_pipeline_run(config, paths.metadata_path, started_at, data_hash, error=e)
        raise
    log.info("pipeline %s finished in %.1f s", config.pipeline.name, time.monotonic() - started)
    run_id, mlflow_run_id = track_pipeline_run(config, paths.metadata_path, started_at, data_hash)
    return dataclasses.replace(paths, pipeline_run_id=run_id, mlflow_run_id=mlflow_run_id)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.local_runner",
        description="Run the captioner TFX pipeline locally (LocalDagRunner, sqlite ML Metadata).",
    )
    add_config_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_third_party_noise()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = config_from_args(args)
    try:
        paths = run(config)
    except Exception as e:  # noqa: BLE001 - one clear line for the user, details above in the log
        print(f"error: pipeline {config.pipeline.name} failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(f"pipeline {config.pipeline.name} succeeded; artifacts under {paths.pipeline_root}")
    if config.mlflow.tracking_uri:
        print(f"MLflow run {paths.mlflow_run_id} on {config.mlflow.tracking_uri}")
    else:
        ui = f"make mlflow-ui PROFILE={shlex.quote(args.profile)}" if not args.overrides else shlex.join(
            [".venv/bin/python", "-m", "tracking.ui", "--profile", args.profile, *(f"--set={o}" for o in args.overrides)]
        )
        print(f"MLflow run {paths.mlflow_run_id} in {config.mlflow_tracking_uri}; UI: {ui}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Compiles the pipeline for Vertex AI Pipelines and for open-source Kubeflow Pipelines v2.

`python -m pipelines.kubeflow_runner --profile P [--target vertex|kubeflow] [--image IMAGE]
[--output FILE]`, or `make compile-kfp PROFILE=P`, which writes both targets into
`outputs/<profile>/kfp/`. It only compiles (KubeflowV2DagRunner); nothing is submitted.

- `pipeline.json` (Vertex AI): TFX's PipelineJob, with the latest-blessed-model resolver.
- `pipeline.yaml` (open-source KFP, `kfp.Client().create_run_from_pipeline_package`): the
  pipeline spec alone, without the resolver (the KFP backend rejects resolver executors:
  "resolver executors not implemented", backend/src/v2/compiler/argocompiler), so the gate
  checks its thresholds only; then a Kubernetes platform spec that puts each pod's
  `pipeline/runid` label (set by the KFP API server on every pod of a run) into the step's
  environment as KFP_RUN_ID, the run id the logging steps record under
  (components/tracked.py). An environment variable, not a parameter: a per-run parameter
  would enter KFP's cache key and rerun the Trainer every time.

Every component runs in one container image (`--image`, default `captioner:latest`) that
holds this project installed, with its repo checkout at `--image-repo-root` (default
`/app`): the image's Python must import `components`, `models` and `configs`, and the
curated schema is read from `<image repo root>/<validation.schema_dir>`.

Paths for the cluster come from the config or the environment: set CAPTIONER_DATA_DIR and
CAPTIONER_OUTPUT_ROOT to URIs such as gs://bucket/captioner/data, gs://bucket/captioner/out.
The pipeline root is `<output root>/tfx`; a relative `push.base_dir` goes under the output
root. The data snapshot is not hashed here (it may be remote and large): pass its hash with
`--data-fingerprint` to pin the cache to it, or leave "unpinned".
"""

from __future__ import annotations

import argparse
import logging
import posixpath
import sys
from pathlib import Path

from configs import Config
from configs.cli import add_config_arguments, config_from_args
from configs.config import REPO_ROOT, is_uri

DEFAULT_IMAGE = "captioner:latest"
DEFAULT_IMAGE_REPO_ROOT = "/app"
UNPINNED = "unpinned"
TARGET_FILES = {"vertex": "pipeline.json", "kubeflow": "pipeline.yaml"}
RUN_ID_LABEL = "pipeline/runid"  # KFP's label on every pod of a run

log = logging.getLogger("pipelines.kubeflow_runner")


def default_output(config: Config, target: str = "vertex") -> Path:
    return REPO_ROOT / "outputs" / config.profile / "kfp" / TARGET_FILES[target]


def cluster_path(path: str, base: str) -> str:
    """`path` as the cluster sees it: URIs and absolute paths as they are, else under `base`."""
    if is_uri(path) or posixpath.isabs(path):
        return path
    return posixpath.join(base, path)


def cluster_tracking(config: Config):
    """The steps' MLflow settings in the cluster: the configured tracking server, or none
    (a sqlite file under the output root is no store pods can share)."""
    from tracking.lifecycle import settings_of

    if not config.mlflow.tracking_uri:
        log.warning("no mlflow.tracking_uri (or MLFLOW_TRACKING_URI): the steps will record nothing in MLflow")
        return None
    return settings_of(config)


def compile_pipeline(
    config: Config,
    output: Path,
    image: str = DEFAULT_IMAGE,
    data_fingerprint: str = UNPINNED,
    image_repo_root: str = DEFAULT_IMAGE_REPO_ROOT,
    target: str = "vertex",
    exit_handler: bool = True,
) -> Path:
    """Writes the spec of `config` for `target` (see the module docstring) to `output`;
    `exit_handler=False` leaves out the step that ends a failed run's MLflow run, for KFP
    backends that reject exit handlers taking the DAG's final status."""
    from tfx import v1 as tfx

    from pipelines.pipeline import create_pipeline

    output_root = cluster_path(config.pipeline.output_root, image_repo_root)
    data_dir = cluster_path(config.data.data_dir, image_repo_root)
    for name, value in (("output root", output_root), ("data dir", data_dir)):
        if not is_uri(value):
            log.warning("the %s %s is not a URI: every pod must see it (set CAPTIONER_%s to gs://...)",
                        name, value, "OUTPUT_ROOT" if name == "output root" else "DATA_DIR")
    tracking = cluster_tracking(config)
    pipeline = create_pipeline(
        config,
        tracking=tracking,
        data_dir=data_dir,
        splits=list(config.data.splits),
        data_fingerprint=data_fingerprint,
        pipeline_root=posixpath.join(output_root, "tfx"),
        metadata_path=None,  # Kubeflow / Vertex keep ML Metadata themselves
        push_dir=cluster_path(config.push.base_dir, output_root),
        repo_path=lambda path: cluster_path(path, image_repo_root),
        baseline=target == "vertex",
    )
    output = Path(output)
    if target == "kubeflow" and output.suffix not in (".yaml", ".yml"):
        raise ValueError(f"{output}: the KFP client uploads .yaml or .yml packages only")
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(
            default_image=image, use_pipeline_spec_2_1=target == "kubeflow"),  # the KFP API server wants 2.1
        output_dir=str(output.parent),
        output_filename=output.name,
    )
    if tracking is not None and exit_handler:  # whichever step fails, the MLflow run ends FAILED
        from components.run_end.component import MlflowRunEnd
        from components.tracked import encode

        runner.set_exit_handler(MlflowRunEnd(final_status=tfx.orchestration.experimental.FinalStatusStr(),
                                             tracking=encode(tracking)))
    job = runner.run(pipeline, write_out=target == "vertex")
    if target == "kubeflow":
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(kubeflow_package(job))
    return output


def kubeflow_package(job: dict) -> str:
    """Open-source KFP's upload format from TFX's PipelineJob: the pipeline spec, then the
    platform spec giving every container step its run id (see the module docstring)."""
    import yaml

    from components.tracked import RUN_ID_ENV

    spec = dict(job["pipelineSpec"])
    # TFX names the pipeline root in the job's runtime config only; the package keeps it as
    # the spec's default (pass pipeline_root= when creating the run to be sure it is used).
    spec["defaultPipelineRoot"] = job["runtimeConfig"]["gcsOutputDirectory"]
    executors = {
        label: {"fieldPathAsEnv": [{"name": RUN_ID_ENV, "fieldPath": f"metadata.labels['{RUN_ID_LABEL}']"}]}
        for label, executor in spec["deploymentSpec"]["executors"].items() if "container" in executor
    }
    platform = {"platforms": {"kubernetes": {"deploymentSpec": {"executors": executors}}}}
    return yaml.safe_dump_all([spec, platform], sort_keys=False)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.kubeflow_runner",
        description="Compile the captioner TFX pipeline for Vertex AI (pipeline.json) and open-source Kubeflow Pipelines v2 (pipeline.yaml).",
    )
    add_config_arguments(parser)
    parser.add_argument("--image", default=DEFAULT_IMAGE, help=f"container image of every step (default {DEFAULT_IMAGE})")
    parser.add_argument("--image-repo-root", default=DEFAULT_IMAGE_REPO_ROOT,
                        help=f"where the image holds this repo (default {DEFAULT_IMAGE_REPO_ROOT})")
    parser.add_argument("--data-fingerprint", default=UNPINNED,
                        help=f"content hash of the data snapshot, pins the cache (default {UNPINNED!r})")
    parser.add_argument("--target", choices=sorted(TARGET_FILES), default=None,
                        help="compile for this orchestrator only (default both)")
    parser.add_argument("--output", type=Path, default=None,
                        help="the spec file to write, with --target (default outputs/<profile>/kfp/pipeline.{json,yaml})")
    parser.add_argument("--no-exit-handler", dest="exit_handler", action="store_false",
                        help="leave out the exit handler that ends a failed run's MLflow run FAILED: KFP backends "
                             "before kubeflow/pipelines#11953 (June 2025) reject a run with "
                             "'task final status not supported yet'")
    return parser


def main(argv: list[str] | None = None) -> int:
    from configs.cli import quiet_third_party_noise

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.output and not args.target:
        parser.error("--output names one file: give --target vertex or --target kubeflow with it")
    quiet_third_party_noise()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = config_from_args(args)
    for target in [args.target] if args.target else ["vertex", "kubeflow"]:
        output = compile_pipeline(
            config,
            args.output or default_output(config, target),
            image=args.image,
            data_fingerprint=args.data_fingerprint,
            image_repo_root=args.image_repo_root,
            target=target,
            exit_handler=args.exit_handler,
        )
        print(f"pipeline {config.pipeline.name} compiled for {target} (image {args.image}): {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

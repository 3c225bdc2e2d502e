"""Compiles the pipeline for Kubeflow Pipelines v2 / Vertex AI Pipelines: a pipeline.json.

`python -m pipelines.kubeflow_runner --profile P [--image IMAGE] [--output FILE]`, or
`make compile-kfp PROFILE=P`, which writes `outputs/<profile>/kfp/pipeline.json`. It only
compiles (KubeflowV2DagRunner); submit the file with the KFP client or Vertex AI.

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

log = logging.getLogger("pipelines.kubeflow_runner")


def default_output(config: Config) -> Path:
    return REPO_ROOT / "outputs" / config.profile / "kfp" / "pipeline.json"


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
) -> Path:
    """Writes the KFP v2 pipeline spec of `config` to `output` and returns it."""
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
    )
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(default_image=image),
        output_dir=str(output.parent),
        output_filename=output.name,
    )
    if tracking is not None:  # whichever step fails, the MLflow run ends FAILED
        from components.run_end.component import MlflowRunEnd
        from components.tracked import encode

        runner.set_exit_handler(MlflowRunEnd(final_status=tfx.orchestration.experimental.FinalStatusStr(),
                                             tracking=encode(tracking)))
    runner.run(pipeline)
    return output


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.kubeflow_runner",
        description="Compile the captioner TFX pipeline to a Kubeflow Pipelines v2 / Vertex AI spec (JSON).",
    )
    add_config_arguments(parser)
    parser.add_argument("--image", default=DEFAULT_IMAGE, help=f"container image of every step (default {DEFAULT_IMAGE})")
    parser.add_argument("--image-repo-root", default=DEFAULT_IMAGE_REPO_ROOT,
                        help=f"where the image holds this repo (default {DEFAULT_IMAGE_REPO_ROOT})")
    parser.add_argument("--data-fingerprint", default=UNPINNED,
                        help=f"content hash of the data snapshot, pins the cache (default {UNPINNED!r})")
    parser.add_argument("--output", type=Path, default=None,
                        help="the spec file to write (default outputs/<profile>/kfp/pipeline.json)")
    return parser


def main(argv: list[str] | None = None) -> int:
    from configs.cli import quiet_third_party_noise

    args = build_parser().parse_args(argv)
    quiet_third_party_noise()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = config_from_args(args)
    output = compile_pipeline(
        config,
        args.output or default_output(config),
        image=args.image,
        data_fingerprint=args.data_fingerprint,
        image_repo_root=args.image_repo_root,
    )
    print(f"pipeline {config.pipeline.name} compiled for Kubeflow Pipelines v2 (image {args.image}): {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

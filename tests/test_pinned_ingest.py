"""Ingestion limits end to end through Beam: the configured pixel limit reaches the Beam
step, a zero skip limit accepts clean data, and bad caption lines alone can fail a run.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
warnings.filterwarnings("ignore", category=FutureWarning)

import apache_beam as beam  # noqa: E402
import pytest  # noqa: E402
from apache_beam.options.pipeline_options import PipelineOptions  # noqa: E402

from components.flickr8k_example_gen.ingest import IngestionError, run_ingestion  # noqa: E402
from data import layout  # noqa: E402
from models import contract  # noqa: E402
from tests import datasets  # noqa: E402
from tests.runs import smoke_config  # noqa: E402

SPLITS = ["train", "dev", "test"]
NUM_IMAGES = 10


def make_pipeline() -> beam.Pipeline:
    return beam.Pipeline(options=PipelineOptions(["--direct_running_mode=in_memory"]))


def test_the_configured_pixel_limit_reaches_the_beam_step(tmp_path: Path) -> None:
    from tfx.types import standard_artifacts

    from components.flickr8k_example_gen.component import IngestionReport
    from components.flickr8k_example_gen.executor import Executor
    from pipelines.pipeline import create_pipeline

    root = datasets.make_dataset(tmp_path, NUM_IMAGES, seed=3)
    pixels = sorted(w * h for w, h in (r.size for r in datasets.planned(NUM_IMAGES, 3).values()))
    limit = pixels[len(pixels) // 2]  # images with more pixels than this are skipped
    too_large = sum(1 for p in pixels if p > limit)
    assert 0 < too_large < NUM_IMAGES
    config = smoke_config(tmp_path / "out", **{"ingest.max_image_pixels": limit, "ingest.max_skipped_fraction": 1.0})
    pipeline = create_pipeline(config, root, SPLITS, "fingerprint", tmp_path / "tfx")
    node = next(n for n in pipeline.components if n.id == "Flickr8kExampleGen")  # the node a run wires
    assert node.exec_properties["max_image_pixels"] == limit

    examples, report = standard_artifacts.Examples(), IngestionReport()
    examples.uri, report.uri = str(tmp_path / "examples"), str(tmp_path / "report")
    Executor().Do({}, {"examples": [examples], "report": [report]}, dict(node.exec_properties))
    written = json.loads((tmp_path / "report" / contract.INGESTION_REPORT_FILE).read_text())
    assert written["skipped_by_reason"] == {layout.IMAGE_TOO_LARGE: too_large}
    assert sum(written["examples_per_split"].values()) == NUM_IMAGES - too_large


def test_a_zero_limit_accepts_clean_data(tmp_path: Path) -> None:
    root = datasets.make_dataset(tmp_path, NUM_IMAGES, seed=1)
    result = run_ingestion(
        root, SPLITS, tmp_path / "examples", tmp_path / "report", make_pipeline,
        max_skipped_fraction=0.0, max_image_pixels=10**8,
    )
    assert sum(result.examples_per_split.values()) == NUM_IMAGES


def test_bad_caption_lines_alone_fail_the_run(tmp_path: Path) -> None:
    root = datasets.make_dataset(tmp_path, NUM_IMAGES, seed=1)
    for _ in range(2):
        datasets.append_caption_line(root, b"no tab on this line")
    # 2 of 52 caption lines (3.8%) against a 3% limit; every image is fine.
    with pytest.raises(IngestionError, match=r"skipped 3\.8% of caption lines, above the limit of 3\.0%"):
        run_ingestion(
            root, SPLITS, tmp_path / "examples", tmp_path / "report", make_pipeline,
            max_skipped_fraction=0.03, max_image_pixels=10**8,
        )
    assert list((tmp_path / "examples").glob("Split-*")) == []

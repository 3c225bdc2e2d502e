"""End to end: the smoke pipeline ingests, validates and stops on bad data (issue 2)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import tensorflow as tf

from components.anomalies_check.check import describe
from data.anomalies import read_anomalies
from tests import mlmd
from tests.runs import smoke_config

pytestmark = pytest.mark.e2e


def _image_ids(split_dir: Path) -> list[str]:
    files = sorted(str(p) for p in split_dir.glob("*.gz"))
    ids = []
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP"):
        example = tf.train.Example.FromString(record.numpy())
        ids.append(example.features.feature["image_id"].bytes_list.value[0].decode())
    return ids


def test_smoke_run_writes_examples_split_by_image(smoke_run):
    examples = mlmd.latest_uri(smoke_run.metadata_path, "Examples", "Flickr8kExampleGen")
    ids = {split: _image_ids(examples / f"Split-{split}") for split in ("train", "dev", "test")}
    data_dir = smoke_run.config.data_dir
    for split, file_name in (("train", "trainImages"), ("dev", "devImages"), ("test", "testImages")):
        listed = (data_dir / f"Flickr_8k.{file_name}.txt").read_text().split()
        assert sorted(ids[split]) == sorted(name[: -len(".jpg")] for name in listed)
    all_ids = ids["train"] + ids["dev"] + ids["test"]
    assert len(all_ids) == len(set(all_ids)) == smoke_run.config.data.synthetic.num_images


def test_smoke_run_has_statistics_schema_and_no_anomalies(smoke_run):
    statistics = mlmd.latest_uri(smoke_run.metadata_path, "ExampleStatistics", "StatisticsGen")
    assert (statistics / "Split-train" / "FeatureStats.pb").stat().st_size > 0
    schema = mlmd.latest_uri(smoke_run.metadata_path, "Schema", "ImportSchemaGen")
    assert "captions" in (schema / "schema.pbtxt").read_text()
    anomalies = mlmd.latest_uri(smoke_run.metadata_path, "ExampleAnomalies", "ExampleValidator")
    assert describe(read_anomalies(anomalies, ["train", "dev", "test"])) == []


def test_smoke_run_reports_zero_skips(smoke_run):
    report_dir = mlmd.latest_uri(smoke_run.metadata_path, "captioner.IngestionReport")
    report = json.loads((report_dir / "ingestion_report.json").read_text())
    assert report["skipped_by_reason"] == {}
    assert report["total_images"] == smoke_run.config.data.synthetic.num_images
    assert report["total_caption_lines"] == 5 * smoke_run.config.data.synthetic.num_images


def test_too_many_bad_images_fail_the_run_and_publish_no_examples(tmp_path):
    from pipelines import local_runner

    config = smoke_config(tmp_path, **{"data.synthetic.num_images": 30})
    from data.resolve import ensure_dataset

    data_dir = ensure_dataset(config)
    victim = sorted((data_dir / "Flicker8k_Dataset").glob("*.jpg"))[0]
    victim.write_bytes(victim.read_bytes()[:200])  # truncated JPEG: 1 of 30 images > 1%
    with pytest.raises(RuntimeError, match="image_corrupt"):
        local_runner.run(config)
    assert mlmd.live_artifacts(config.output_root / "metadata.db", "Examples") == []


def test_anomalies_stop_the_run_and_name_the_feature(tmp_path):
    from pipelines import local_runner

    strict = tmp_path / "strict_schema"
    strict.mkdir()
    schema = (Path("data/schema/schema.pbtxt")).read_text()
    # Every image has five captions; a schema allowing at most three must flag `captions`.
    (strict / "schema.pbtxt").write_text(schema.replace("value_count { min: 1 max: 10 }", "value_count { min: 1 max: 3 }"))
    config = smoke_config(tmp_path, **{"validation.schema_dir": str(strict), "data.synthetic.num_images": 20})
    with pytest.raises(RuntimeError, match=r"(?s)anomalies.*captions"):
        local_runner.run(config)


def test_rerun_without_changes_reuses_cached_features(smoke_run):
    """A second run on unchanged data and backbone does not recompute image features."""
    from ml_metadata.proto import metadata_store_pb2

    from pipelines import local_runner

    before = mlmd.live_artifacts(smoke_run.metadata_path, "Examples")
    local_runner.run(smoke_run.config)
    runs = mlmd.executions(smoke_run.metadata_path, "FeatureExtractor")
    assert [e.last_known_state for e in runs] == [
        metadata_store_pb2.Execution.COMPLETE,
        metadata_store_pb2.Execution.CACHED,
    ]
    assert mlmd.live_artifacts(smoke_run.metadata_path, "Examples") == before

"""Tests of components/anomalies_check: TFDV against the curated schema, then the gate.

What ExampleValidator does inside the pipeline is done here with TFDV directly: statistics
of ingested (or deliberately broken) examples are validated against data/schema/schema.pbtxt,
the Anomalies proto is written where ExampleValidator writes it, and `raise_on_anomalies`
must stop the run naming the feature.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
warnings.filterwarnings("ignore", category=FutureWarning)

# Before tensorflow_data_validation: importing it puts IPython/extensions on sys.path, whose
# regular `tests` package would then shadow this directory's namespace package.
from tests import datasets  # noqa: E402  isort: skip

import apache_beam as beam  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_data_validation as tfdv  # noqa: E402
from apache_beam.options.pipeline_options import PipelineOptions  # noqa: E402
from tensorflow_metadata.proto.v0 import anomalies_pb2  # noqa: E402

from components.anomalies_check import check  # noqa: E402
from components.anomalies_check.check import AnomaliesFound  # noqa: E402
from components.flickr8k_example_gen import ingest  # noqa: E402
from configs.config import REPO_ROOT, IngestConfig  # noqa: E402
from data import anomalies as anomalies_artifact  # noqa: E402

SCHEMA_PATH = REPO_ROOT / "data" / "schema" / "schema.pbtxt"
NUM_IMAGES = 24


def beam_options() -> PipelineOptions:
    return PipelineOptions(["--direct_running_mode=in_memory"])


@pytest.fixture(scope="module")
def schema():
    return tfdv.load_schema_text(str(SCHEMA_PATH))


@pytest.fixture(scope="module")
def train_examples(tmp_path_factory: pytest.TempPathFactory) -> list[tf.train.Example]:
    """Clean examples of the train split, written by the real ingestion."""
    tmp = tmp_path_factory.mktemp("anomalies")
    root = datasets.make_dataset(tmp, num_images=NUM_IMAGES, seed=3)
    out_dir = tmp / "examples"
    ingest.run_ingestion(
        root,
        ["train", "dev", "test"],
        out_dir,
        tmp / "report",
        lambda: beam.Pipeline(options=beam_options()),
        max_skipped_fraction=IngestConfig().max_skipped_fraction,
        max_image_pixels=IngestConfig().max_image_pixels,
    )
    files = sorted(str(p) for p in ingest.split_dir(out_dir, "train").glob("*.gz"))
    examples = [tf.train.Example.FromString(r.numpy()) for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]
    assert len(examples) > 10
    return examples


def validate(
    examples: list[tf.train.Example],
    schema,
    tmp_path: Path,
    change: Callable[[int, tf.train.Example], None] | None = None,
) -> anomalies_pb2.Anomalies:
    """Write (changed copies of) the examples as a GZIP TFRecord, compute TFDV statistics
    from it as StatisticsGen does, and validate them against the schema."""
    path = tmp_path / "examples.tfrecord.gz"
    with tf.io.TFRecordWriter(str(path), "GZIP") as writer:
        for i, example in enumerate(examples):
            copy = tf.train.Example()
            copy.CopyFrom(example)
            if change is not None:
                change(i, copy)
            writer.write(copy.SerializeToString())
    statistics = tfdv.generate_statistics_from_tfrecord(str(path), pipeline_options=beam_options())
    return tfdv.validate_statistics(statistics, schema)


def write_anomalies(uri: Path, by_split: dict[str, anomalies_pb2.Anomalies]) -> Path:
    """Lay the protos out as ExampleValidator does: `<uri>/Split-<name>/SchemaDiff.pb`."""
    for split, anomalies in by_split.items():
        (uri / f"Split-{split}").mkdir(parents=True, exist_ok=True)
        (uri / f"Split-{split}" / anomalies_artifact.ANOMALIES_FILE).write_bytes(anomalies.SerializeToString())
    return uri


def drop_captions_from_every_other(i: int, example: tf.train.Example) -> None:
    if i % 2 == 0:
        del example.features.feature["captions"]


def zero_height_of_the_first(i: int, example: tf.train.Example) -> None:
    if i == 0:
        example.features.feature["image/height"].int64_list.value[:] = [0]


def test_ingested_examples_match_the_curated_schema(train_examples, schema, tmp_path: Path) -> None:
    anomalies = validate(train_examples, schema, tmp_path)

    assert check.describe({"train": anomalies}) == []
    uri = write_anomalies(tmp_path / "anomalies", {"train": anomalies, "dev": anomalies})
    check.raise_on_anomalies(uri, ["train", "dev"])  # does not raise


def test_examples_missing_captions_stop_the_run(train_examples, schema, tmp_path: Path) -> None:
    anomalies = validate(train_examples, schema, tmp_path, drop_captions_from_every_other)

    assert sorted(anomalies.anomaly_info) == ["captions"]
    lines = check.describe({"train": anomalies})
    assert len(lines) == 1 and lines[0].startswith("train: captions: ")
    # The detail says which fraction of the examples still has captions.
    kept = len(train_examples) // 2
    assert f"actual = {kept / len(train_examples):.6f}" in lines[0]

    uri = write_anomalies(tmp_path / "anomalies", {"train": anomalies})
    with pytest.raises(AnomaliesFound) as error:
        check.raise_on_anomalies(uri, ["train"])
    message = str(error.value)
    assert "train: captions:" in message
    assert "1 anomalies" in message
    assert "data/schema/schema.pbtxt" in message


def test_zero_image_height_stops_the_run_and_names_the_split(train_examples, schema, tmp_path: Path) -> None:
    bad = validate(train_examples, schema, tmp_path, zero_height_of_the_first)
    clean = anomalies_pb2.Anomalies()  # what a clean split's SchemaDiff.pb holds

    assert sorted(bad.anomaly_info) == ["image/height"]
    uri = write_anomalies(tmp_path / "anomalies", {"train": clean, "dev": bad})
    with pytest.raises(AnomaliesFound) as error:
        check.raise_on_anomalies(uri, ["train", "dev"])
    message = str(error.value)
    assert "dev: image/height: Out-of-range values" in message
    assert "train:" not in message


def test_dataset_level_anomaly_is_reported(tmp_path: Path) -> None:
    anomalies = anomalies_pb2.Anomalies()
    anomalies.dataset_anomaly_info.short_description = "Low num examples in dataset."
    anomalies.dataset_anomaly_info.description = "The dataset has 0 examples, fewer than 1."
    uri = write_anomalies(tmp_path / "anomalies", {"test": anomalies})

    with pytest.raises(AnomaliesFound, match="test: dataset: Low num examples"):
        check.raise_on_anomalies(uri, ["test"])


def test_missing_anomalies_file_is_not_silently_clean(tmp_path: Path) -> None:
    uri = write_anomalies(tmp_path / "anomalies", {"train": anomalies_pb2.Anomalies()})

    with pytest.raises(FileNotFoundError):
        check.raise_on_anomalies(uri, ["train", "eval"])

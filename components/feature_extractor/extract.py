"""Images -> backbone features in Beam: the work of the FeatureExtractor component.

Called by the FeatureExtractor executor (executor.py) inside the pipeline TFX makes, and by
tests/test_feature_extractor.py and bench/features.py with a plain DirectRunner pipeline.
The Beam steps live here: read, batch, extract, write, count. The model they run is
feature_model.py's, the examples they write are examples.py's (the raw example without
the image, plus the pooled features and optionally the grid), and the artifact's schema is
features_schema.py's.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Iterable, Iterator, Mapping

import apache_beam as beam
import tensorflow as tf
from apache_beam.io import tfrecordio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.metrics.metric import MetricsFilter

from configs.console import Progress
from components.feature_extractor.examples import as_example, image_id_of, output_example, parse_example, single_bytes
from components.feature_extractor.feature_model import BackboneArgs, load_feature_model
from models.contract import IMAGE_ENCODED_KEY
from models.images import decode_image

log = logging.getLogger(__name__)

NAMESPACE = "feature_extractor"
OUTPUT_PREFIX = "data_tfrecord"
# Bump when a code change alters the features of the same images with the same weights
# (decoding, resizing, the backbone port): TFX's cache then recomputes them.
FEATURE_VERSION = 1
# The features are written uncompressed: gzip shrinks a grid example (mostly the zeros of
# ReLU6) several times but costs a large share of the backbone's own time (README,
# Performance: bench/features.py --store-grid). Readers pick the compression by file suffix
# (TFX Transform's tfxio does), so artifacts of either kind read the same.
OUTPUT_COMPRESSION = CompressionTypes.UNCOMPRESSED


class ExtractFeatures(beam.DoFn):
    """A batch of raw examples -> serialized feature examples, one backbone call a batch."""

    def __init__(self, backbone_args: BackboneArgs, store_grid: bool, split: str = "all", total: int | None = None):
        self._args = backbone_args
        self._store_grid = store_grid
        self._split = split
        self._total = total  # the split's image count, for the progress bar's ETA (None: unknown)
        self._images = beam.metrics.Metrics.counter(NAMESPACE, f"{split}/images")
        self._batches = beam.metrics.Metrics.counter(NAMESPACE, f"{split}/batches")
        self._model_ms = beam.metrics.Metrics.counter(NAMESPACE, f"{split}/model_ms")

    def setup(self) -> None:
        use_hardware_crc32c()  # here, in the worker that runs the fused Write step too
        self._model = load_feature_model(self._args)
        self._progress = Progress(f"features [{self._split}]", self._total, "images", log)

    def teardown(self) -> None:
        self._progress.close()

    def start_bundle(self) -> None:
        self._bundle_started = time.perf_counter()
        self._bundle_images = 0
        self._bundle_model_s = 0.0

    def process(self, batch: Iterable[tf.train.Example | bytes | Mapping[str, Any]]) -> Iterator[bytes]:
        examples = [as_example(raw) for raw in batch]
        if not examples:
            return
        encoded = [single_bytes(ex, IMAGE_ENCODED_KEY) for ex in examples]
        started = time.perf_counter()
        try:
            out = self._model(encoded, with_grid=self._store_grid)
        except tf.errors.InvalidArgumentError as e:
            raise ValueError(_decode_failure(examples, encoded, e)) from e
        seconds = time.perf_counter() - started
        self._bundle_model_s += seconds
        self._bundle_images += len(examples)
        self._progress.update(len(examples))
        self._images.inc(len(examples))
        self._batches.inc()
        self._model_ms.inc(int(seconds * 1000))
        pooled, grids, maps = out["pooled"], out.get("grid"), out.get("map")
        for i, example in enumerate(examples):
            grid = grids[i] if grids is not None else None
            block_map = maps[i] if maps is not None else None
            yield output_example(example, pooled[i], grid, block_map).SerializeToString()

    def finish_bundle(self) -> None:
        if self._bundle_images:
            wall = time.perf_counter() - self._bundle_started
            log.info(
                "features [%s]: %d images in %.1f s, %.1f images/s (backbone %.1f s, %.1f images/s)",
                self._split,
                self._bundle_images,
                wall,
                self._bundle_images / wall,
                self._bundle_model_s,
                self._bundle_images / max(self._bundle_model_s, 1e-9),
            )


def use_hardware_crc32c() -> bool:
    """Make Beam's TFRecord writer checksum records with google-crc32c's C (SSE4.2) code.

    Without python-snappy, Beam 2.59 falls back to crcmod's pure-Python table code, a
    noticeable share of the time of a grid record (README, Performance); google-crc32c
    computes the same checksum in C. Beam keeps its chosen function in `_default_crc32c_fn.fn` and
    only picks one while that is None, so this sets it first. Returns whether it did;
    without google-crc32c's C build Beam's own choice stays.
    """
    try:
        import google_crc32c
    except ImportError:
        return False
    if google_crc32c.implementation != "c":
        return False
    tfrecordio._default_crc32c_fn.fn = google_crc32c.value
    return True


def _decode_failure(examples: list[tf.train.Example], encoded: list[bytes], error: Exception) -> str:
    """Name the images of a failed batch that do not decode (ingestion should have caught them)."""
    size = 8  # any size: only decoding is tried
    bad = []
    for example, data in zip(examples, encoded):
        try:
            decode_image(tf.constant(data), size)
        except tf.errors.InvalidArgumentError:
            bad.append(image_id_of(example))
    return f"cannot decode image(s) {bad or [image_id_of(e) for e in examples]}: {error.message}"


def extract_split(
    pipeline: beam.Pipeline,
    input_pattern: str,
    output_prefix: str,
    backbone_args: BackboneArgs,
    batch_size: int,
    store_grid: bool,
    split: str | None = None,
    total: int | None = None,
) -> beam.PCollection:
    """Read gzipped raw tf.Examples, write feature tf.Examples, uncompressed, to `output_prefix*`.

    `split` names the Beam steps and the metrics (default: the output directory's name), so
    several splits can share one pipeline. `total` (the split's image count) gives the
    progress bar its ETA.
    """
    split = split or os.path.basename(os.path.dirname(output_prefix)).removeprefix("Split-")
    return (
        pipeline
        | f"Read[{split}]" >> beam.io.ReadFromTFRecord(input_pattern, compression_type=CompressionTypes.GZIP)
        | f"Parse[{split}]" >> beam.Map(parse_example)
        | f"Batch[{split}]" >> beam.BatchElements(min_batch_size=batch_size, max_batch_size=batch_size)
        | f"Extract[{split}]" >> beam.ParDo(ExtractFeatures(backbone_args, store_grid, split, total))
        | f"Write[{split}]" >> beam.io.WriteToTFRecord(output_prefix, compression_type=OUTPUT_COMPRESSION)
    )


def split_metrics(result: beam.runners.runner.PipelineResult) -> dict[str, dict[str, int]]:
    """{split: {"images": n, "batches": n, "model_ms": n}} from a finished pipeline's counters."""
    out: dict[str, dict[str, int]] = {}
    for counter in result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]:
        split, name = counter.key.metric.name.rsplit("/", 1)
        value = counter.committed if counter.committed is not None else counter.attempted
        out.setdefault(split, {}).setdefault(name, 0)
        out[split][name] += int(value or 0)
    return out


def log_summary(metrics: Mapping[str, Mapping[str, int]], seconds: float) -> None:
    """One line: images per split, the total, overall throughput and the backbone's own."""
    total = sum(m.get("images", 0) for m in metrics.values())
    model_s = sum(m.get("model_ms", 0) for m in metrics.values()) / 1000
    splits = ", ".join(f"{split} {m.get('images', 0)}" for split, m in sorted(metrics.items()))
    log.info(
        "features: %d images (%s) in %.1f s, %.1f images/s overall; backbone %.1f s, %.1f images/s",
        total, splits, seconds, total / max(seconds, 1e-9), model_s, total / max(model_s, 1e-9),
    )

"""Scores a serving SavedModel on a split of raw examples: captions, BLEU-1..4, CIDEr-D, METEOR.

Called by the BleuEvaluator executor (for the candidate and for the baseline model) and
usable from a notebook or benchmark on any export. It reads the raw tf.Examples of
Flickr8kExampleGen (`image_id`, `image/encoded`, `captions`), sends the encoded bytes in
batches through the exported serving signature (the very graph TF Serving runs, so BLEU
measures what users get, decoding and resizing included), and scores the captions against
all references of each image with `models.metrics`.

Two scorers, side by side: the project's own (NLTK's corpus BLEU and `models.metrics`'
CIDEr-D on `models.text` tokens; no Java; what the gate compares) and, with
`coco_caption=True`, the coco-caption toolkit the papers report (`models.coco_caption`: PTB
tokenizer, BLEU, METEOR, ROUGE-L, CIDEr-D; needs Java), stored as `coco_*` and `meteor`.
Without it, METEOR is None with the reason.
"""

from __future__ import annotations

import dataclasses
import glob
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import tensorflow as tf

from configs.console import Progress, bars_enabled
from models.contract import BLEU_METRICS, CAPTIONS_KEY, CIDER_METRIC, IMAGE_ENCODED_KEY, IMAGE_ID_KEY
from models.coco_caption import coco_caption_scores
from models.metrics import corpus_bleu_scores, corpus_cider

log = logging.getLogger(__name__)

_FEATURES = {
    IMAGE_ID_KEY: tf.io.FixedLenFeature([], tf.string),
    IMAGE_ENCODED_KEY: tf.io.FixedLenFeature([], tf.string),
    CAPTIONS_KEY: tf.io.RaggedFeature(tf.string),
}

# A batch of encoded images -> one caption per image.
Captioner = Callable[[Sequence[bytes]], Sequence[str]]


@dataclasses.dataclass(frozen=True)
class Batch:
    image_ids: list[str]
    images: list[bytes]
    references: list[list[str]]


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """Metrics (JSON-ready) and one prediction per image, in the order they were read."""

    metrics: dict[str, Any]
    predictions: list[dict[str, Any]]

    @property
    def scores(self) -> dict[str, float]:
        """What the gate reads: BLEU-1..4 and CIDEr-D of the project's scorer."""
        return {k: self.metrics[k] for k in (*BLEU_METRICS, CIDER_METRIC)}


def split_files(split_dir: str) -> list[str]:
    """The gzipped TFRecord files of one split of an Examples artifact."""
    files = sorted(glob.glob(os.path.join(split_dir, "*.gz")))
    if not files:
        raise FileNotFoundError(f"no *.gz TFRecord files in {split_dir}")
    return files


def count_examples(files: Sequence[str]) -> int:
    return int(tf.data.TFRecordDataset(list(files), compression_type="GZIP").reduce(0, lambda n, _: n + 1))


def read_batches(files: Sequence[str], batch_size: int) -> Iterator[Batch]:
    """Raw examples in batches, streamed (a large split is never held in memory at once)."""
    dataset = (
        tf.data.TFRecordDataset(list(files), compression_type="GZIP")
        .map(lambda r: tf.io.parse_single_example(r, _FEATURES))
        .ragged_batch(batch_size)  # images may have different numbers of captions
        .prefetch(1)
    )
    for batch in dataset:
        yield Batch(
            image_ids=[i.decode("utf-8") for i in batch[IMAGE_ID_KEY].numpy()],
            images=list(batch[IMAGE_ENCODED_KEY].numpy()),
            references=[[c.decode("utf-8") for c in row if c] for row in batch[CAPTIONS_KEY].to_list()],
        )


def signature_captioner(export_dir: str | Any, signature: str) -> Captioner:
    """A Captioner that calls `signature` of the SavedModel in `export_dir`.

    `export_dir` may also be an already loaded SavedModel, so one load serves every signature.
    """
    from_path = isinstance(export_dir, (str, Path))
    loaded = tf.saved_model.load(str(export_dir)) if from_path else export_dir
    if signature not in loaded.signatures:
        where = export_dir if from_path else "the SavedModel"
        raise KeyError(f"{where} has no signature {signature!r}; it has {', '.join(sorted(loaded.signatures))}")
    fn = loaded.signatures[signature]

    def caption(images: Sequence[bytes]) -> list[str]:
        out = fn(images=tf.constant(list(images), dtype=tf.string))["caption"].numpy()
        return [c.decode("utf-8") for c in out]

    caption.loaded = loaded  # keeps the SavedModel's resources alive with the function
    return caption


def evaluate(
    batches: Iterator[Batch],
    captioner: Captioner,
    total: int,
    name: str = "model",
    progress_every_seconds: float = 30.0,
    coco_caption: bool = False,
) -> Evaluation:
    """Captions for every image, then BLEU-1..4, CIDEr-D and, with `coco_caption`, the
    coco-caption scores (else METEOR is None, with the reason).

    Progress: a bar on a terminal; elsewhere (images done / total, images/s) a log line at
    every 10% of the split and at least every `progress_every_seconds`.
    """
    hypotheses: dict[str, str] = {}
    references: dict[str, list[str]] = {}
    predictions: list[dict[str, Any]] = []
    started = last_log = time.monotonic()
    next_mark = 0.1
    bar = Progress(f"{name}: captioning", total, "images", log) if bars_enabled() else None
    for batch in batches:
        captions = captioner(batch.images)
        if len(captions) != len(batch.image_ids):
            raise ValueError(f"{name}: {len(captions)} captions for {len(batch.image_ids)} images")
        for image_id, caption, refs in zip(batch.image_ids, captions, batch.references):
            if image_id in hypotheses:
                raise ValueError(f"image_id {image_id!r} appears twice in the eval split")
            hypotheses[image_id] = caption
            references[image_id] = refs
            predictions.append({"image_id": image_id, "caption": caption, "references": refs})
        done, now = len(predictions), time.monotonic()
        if bar is not None:
            bar.update(len(batch.image_ids))
        elif total and (done / total >= next_mark or now - last_log >= progress_every_seconds):
            log.info(
                "%s: captioned %d/%d images (%.0f%%), %.1f images/s",
                name, done, total, 100.0 * done / total, done / max(now - started, 1e-9),
            )
            last_log = now
            while next_mark <= done / total:
                next_mark += 0.1
    if bar is not None:
        bar.close()
    seconds = time.monotonic() - started
    if not predictions:
        raise ValueError(f"{name}: the eval split has no examples")

    metrics: dict[str, Any] = dict(corpus_bleu_scores(hypotheses, references))
    metrics[CIDER_METRIC] = corpus_cider(hypotheses, references)
    if coco_caption:
        coco_started = time.monotonic()
        metrics.update(coco_caption_scores(hypotheses, references), meteor_skipped_reason=None)
        log.info("%s: coco-caption scores in %.1f s", name, time.monotonic() - coco_started)
    else:
        metrics.update(meteor=None, meteor_skipped_reason="METEOR was skipped: the coco-caption scorer is off (gate.coco_caption)")
    metrics.update(
        num_images=len(predictions),
        seconds=round(seconds, 3),
        images_per_second=round(len(predictions) / max(seconds, 1e-9), 3),
    )
    return Evaluation(metrics, predictions)

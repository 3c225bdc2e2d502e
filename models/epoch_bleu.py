"""Greedy BLEU on the eval images after every epoch, so early stopping can keep the epoch
that captions best rather than the one with the lowest eval loss.

Used by models/trainer.py when `train.select_by` names a BLEU score. The two criteria can
disagree: a lower eval loss does not always caption better (README, the sweep).

The scores are computed here, inside training, from what the trainer already holds: the
eval split's image arrays and its captions as token ids, decoded back to words (a word
outside the vocabulary is `<unk>` on both sides). So they track, but do not equal, the
BleuEvaluator's scores, which run the exported graph on the JPEG bytes and the raw text
(and decode as configured; this is plain greedy decoding).
"""

from __future__ import annotations

import logging
import time
from typing import Mapping, Sequence

import keras
import numpy as np
import tensorflow as tf

from models.metrics import corpus_bleu_scores, corpus_cider
from models.vocabulary import decode, special_ids
from models.decoding import greedy_decode

log = logging.getLogger(__name__)


def references_by_image(image_index: np.ndarray, captions: np.ndarray, vocabulary: Sequence[str]) -> dict[str, list[str]]:
    """Every image's reference captions as text: {str(image position): [caption, ...]}."""
    vocabulary = list(vocabulary)
    references: dict[str, list[str]] = {}
    for position, ids in zip(image_index, captions):
        references.setdefault(str(position), []).append(decode(list(ids), vocabulary))
    return references


class EpochBleu(keras.callbacks.Callback):
    """Adds `val_bleu_1` .. `val_bleu_4` to the epoch's logs (and so to the history).

    Must come before the callbacks that read those keys (EarlyStopping) in the list.
    """

    def __init__(
        self,
        images: Mapping[str, np.ndarray],
        references: Mapping[str, Sequence[str]],
        vocabulary: Sequence[str],
        max_length: int,
        batch_size: int = 256,
    ) -> None:
        super().__init__()
        self.images = images
        self.references = references
        self.vocabulary = list(vocabulary)
        self.max_length = max_length
        self.batch_size = batch_size
        self._decode = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        ids = special_ids(self.vocabulary)
        model = self.model
        self._decode = tf.function(
            lambda inputs: greedy_decode(model, inputs, ids["start"], ids["end"], ids["pad"], self.max_length)[0]
        )

    def captions(self) -> dict[str, str]:
        """Greedy captions of every eval image with the current weights."""
        count = len(next(iter(self.images.values())))
        captions: dict[str, str] = {}
        for start in range(0, count, self.batch_size):
            batch = {
                name: tf.constant(array[start : start + self.batch_size], tf.float32)
                for name, array in self.images.items()
            }
            for offset, ids in enumerate(self._decode(batch).numpy()):
                captions[str(start + offset)] = decode(list(ids), self.vocabulary)
        return captions

    def scores(self, model: keras.Model, cider: bool = True) -> dict[str, float]:
        """bleu_1..bleu_4 (and cider_d) of `model`'s greedy eval captions, outside a fit
        (self-critical training's per-epoch dev scores, models/scst.py)."""
        if self._decode is None or self.model is not model:
            self.set_model(model)
            self.on_train_begin()
        captions = self.captions()
        scores = corpus_bleu_scores(captions, self.references)
        if cider:
            scores["cider_d"] = corpus_cider(captions, self.references)
        return scores

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        started = time.monotonic()
        scores = corpus_bleu_scores(self.captions(), self.references)
        if logs is not None:
            logs.update({f"val_{name}": value for name, value in scores.items()})
        log.info(
            "epoch %d: greedy BLEU-1 %.4f, BLEU-4 %.4f on %d eval images (%.1f s)",
            epoch + 1,
            scores["bleu_1"],
            scores["bleu_4"],
            len(self.references),
            time.monotonic() - started,
        )

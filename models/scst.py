"""Self-critical sequence training (Rennie et al., 2017): a second stage after cross-entropy.

Called by models/trainer.py when `scst.epochs` > 0. Cross-entropy teaches the decoder the
next word of a reference; SCST then trains it on what it is scored on. Every step:

  1. sample K captions for each of B train images from the model itself, in the graph
     (models/decoding.sample_decode), at most `scst.max_length` tokens;
  2. reward each with its CIDEr-D against the image's references, document frequencies
     from the train split (models/cider_reward.py), `<end>` counted as a word, so
     stopping is rewarded or penalised like any other word;
  3. baseline each sample by the mean reward of the image's other K-1 samples (the
     "new self-critical" baseline: no extra greedy decode, an unbiased advantage);
  4. policy gradient on the sampled tokens: minimise mean over tokens of
     -(reward - baseline) * log p(token), the tokens after <end> masked out.

Dropout is off in both the sampling and the gradient pass, so the gradient is that of the
very policy that sampled. After every epoch the dev images are captioned greedily and
scored (BLEU, CIDEr-D); the weights with the best dev CIDEr-D win, the cross-entropy
weights included, so the stage never leaves a model worse on dev than it found it.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Mapping, Sequence

import keras
import numpy as np
import tensorflow as tf

from configs.config import ScstConfig
from configs.console import Progress
from models.cider_reward import CiderD
from models.decoding import sample_decode

log = logging.getLogger(__name__)

# The per-epoch values this stage adds to the training history and the epoch logs.
REWARD_KEY = "scst_reward"
DEV_CIDER_KEY = "val_cider_d"


def caption_tokens(ids: Sequence[int], pad_id: int = 0) -> tuple[int, ...]:
    """A caption's tokens as the reward sees them: padding dropped, `<end>` kept."""
    return tuple(int(t) for t in ids if t != pad_id)


@dataclasses.dataclass(frozen=True)
class ScstImages:
    """The train split per image: model inputs (name -> [N, ...]) and reference token ids."""

    images: Mapping[str, np.ndarray]
    references: list[list[tuple[int, ...]]]

    @classmethod
    def of(cls, images: Mapping[str, np.ndarray], image_index: np.ndarray, captions: np.ndarray) -> ScstImages:
        """From models.trainer.CaptionRows' arrays: captions [R, max_length] start with <start>."""
        count = len(next(iter(images.values())))
        references: list[list[tuple[int, ...]]] = [[] for _ in range(count)]
        for position, ids in zip(image_index, captions):
            references[position].append(caption_tokens(ids[1:]))
        if any(not refs for refs in references):
            raise ValueError("every image needs a reference caption for the SCST reward")
        return cls(images, references)


def advantages(rewards: np.ndarray) -> np.ndarray:
    """rewards [B, K] -> each sample's reward minus the mean of its image's other K-1 samples."""
    k = rewards.shape[1]
    if k < 2:
        raise ValueError("the self-critical baseline needs at least 2 samples per image")
    others = (rewards.sum(axis=1, keepdims=True) - rewards) / (k - 1)
    return rewards - others


class SelfCriticalStep:
    """One SCST optimizer step on a batch of images: sample, reward, baseline, update."""

    def __init__(self, model: keras.Model, data: ScstImages, settings: ScstConfig, ids: Mapping[str, int], seed: int,
                 top_learning_rate: float | None = None):
        self.model, self.data, self.settings, self.seed = model, data, settings, seed
        self.start_id, self.end_id, self.pad_id = ids["start"], ids["end"], ids["pad"]
        self.cider = CiderD(data.references)
        self.prepared = [self.cider.prepare(refs) for refs in data.references]
        # Unrolled over the sampled positions, like the cross-entropy stage: clip.
        self.optimizer = keras.optimizers.Adam(settings.learning_rate, clipnorm=5.0)
        # With a models.finetune.CaptionerOnMaps, the backbone's top trains too, at its own rate.
        self.top_optimizer = None
        if top_learning_rate is not None:
            model.top.trainable = True
            self.top_optimizer = keras.optimizers.Adam(top_learning_rate, clipnorm=5.0)
        self.steps = 0
        self._sample = tf.function(self._sample_graph)
        self._update = tf.function(self._update_graph)

    def _sample_graph(self, inputs: dict[str, tf.Tensor], seed: tf.Tensor) -> tf.Tensor:
        return sample_decode(self.model, inputs, self.start_id, self.end_id, self.pad_id, self.settings.max_length,
                             seed, self.settings.samples_per_image)

    def _update_graph(self, inputs: dict[str, tf.Tensor], ids: tf.Tensor, advantage: tf.Tensor) -> tf.Tensor:
        start = tf.fill([tf.shape(ids)[0], 1], tf.constant(self.start_id, ids.dtype))
        tokens = tf.concat([start, ids[:, :-1]], axis=1)
        mask = tf.cast(ids != self.pad_id, tf.float32)
        k = self.settings.samples_per_image
        with tf.GradientTape() as tape:
            # Each image encoded once, its encoding repeated for its k samples (as sampled).
            image = tf.nest.map_structure(lambda t: tf.repeat(t, k, axis=0), self.model.encode_image(inputs))
            logits = self.model.teacher_forced(image, tokens)
            negative_log_p = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=ids, logits=logits)
            loss = tf.reduce_sum(advantage[:, None] * negative_log_p * mask) / tf.maximum(tf.reduce_sum(mask), 1.0)
        if self.top_optimizer is None:
            variables = self.model.trainable_variables
            self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
            return loss
        decoder, top = self.model.captioner.trainable_variables, self.model.top.trainable_variables
        gradients = tape.gradient(loss, decoder + top)
        self.optimizer.apply_gradients(zip(gradients[: len(decoder)], decoder))
        self.top_optimizer.apply_gradients(zip(gradients[len(decoder) :], top))
        return loss

    def __call__(self, positions: np.ndarray) -> float:
        """Trains on the images at `positions`; returns their samples' mean reward."""
        k = self.settings.samples_per_image
        rows = np.repeat(positions, k)
        inputs = {name: tf.constant(array[positions], tf.float32) for name, array in self.data.images.items()}
        seed = tf.constant([self.seed, self.steps], tf.int64)
        ids = self._sample(inputs, seed)
        rewards = np.array(
            [self.cider.score(caption_tokens(caption, self.pad_id), self.prepared[row]) for caption, row in zip(ids.numpy(), rows)]
        ).reshape(len(positions), k)
        advantage = tf.constant(advantages(rewards).reshape(-1), tf.float32)
        self._update(inputs, ids, advantage)
        self.steps += 1
        return float(rewards.mean())


def train_self_critical(
    model: keras.Model,
    data: ScstImages,
    dev_scores,
    settings: ScstConfig,
    ids: Mapping[str, int],
    seed: int,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    first_epoch: int = 0,
    top_learning_rate: float | None = None,
) -> tuple[dict[str, list[float]], int]:
    """Runs `settings.epochs` SCST epochs over every train image; keeps the best dev CIDEr-D.

    `dev_scores()` returns the current weights' dev scores (bleu_1..bleu_4, cider_d: see
    models/epoch_bleu.EpochBleu.scores). `callbacks` get the Keras training protocol, the
    epochs numbered on from `first_epoch` (the cross-entropy epochs), with the epoch's
    REWARD_KEY, val_cider_d and val_bleu_* in the logs. Returns those per-epoch lists with
    the epochs' seconds, and the epoch kept (0: the cross-entropy weights). `top_learning_rate`:
    `model` is a models.finetune.CaptionerOnMaps on maps, and its top trains at that rate.
    """
    step = SelfCriticalStep(model, data, settings, ids, seed, top_learning_rate)
    count = len(data.references)
    batches = -(-count // settings.batch_size)
    best = dev_scores()
    best_epoch, best_weights = 0, model.get_weights()
    log.info(
        "SCST: %d epochs of %d images, %d samples each; start: dev greedy CIDEr-D %.4f, BLEU-4 %.4f",
        settings.epochs, count, settings.samples_per_image, best["cider_d"], best["bleu_4"],
    )
    history: dict[str, list[float]] = {REWARD_KEY: [], DEV_CIDER_KEY: [], "epoch_seconds": [],
                                       **{f"val_bleu_{n}": [] for n in range(1, 5)}}
    for callback in callbacks:
        callback.set_model(model)
        callback.on_train_begin()
    rng = np.random.default_rng(seed)
    for epoch in range(1, settings.epochs + 1):
        started = time.monotonic()
        for callback in callbacks:
            callback.on_epoch_begin(first_epoch + epoch - 1)
        order = rng.permutation(count)
        progress = Progress(f"SCST epoch {epoch}/{settings.epochs}", batches, "batches", log)
        rewards = []
        for start in range(0, count, settings.batch_size):
            rewards.append(step(order[start : start + settings.batch_size]))
            progress.update(1)
        progress.close()
        scores = dev_scores()
        logs = {REWARD_KEY: float(np.mean(rewards)), DEV_CIDER_KEY: scores["cider_d"],
                **{f"val_bleu_{n}": scores[f"bleu_{n}"] for n in range(1, 5)}}
        seconds = time.monotonic() - started
        for key, value in logs.items():
            history[key].append(value)
        history["epoch_seconds"].append(round(seconds, 3))
        log.info(
            "SCST epoch %d/%d: mean sample reward %.4f, dev greedy CIDEr-D %.4f, BLEU-4 %.4f (%.1f s)",
            epoch, settings.epochs, logs[REWARD_KEY], logs[DEV_CIDER_KEY], logs["val_bleu_4"], seconds,
        )
        if scores["cider_d"] > best["cider_d"]:
            best, best_epoch, best_weights = scores, epoch, model.get_weights()
        for callback in callbacks:
            callback.on_epoch_end(first_epoch + epoch - 1, dict(logs))
    for callback in callbacks:
        callback.on_train_end()
    model.set_weights(best_weights)
    log.info("SCST: kept epoch %d (0: the cross-entropy weights), dev greedy CIDEr-D %.4f", best_epoch, best["cider_d"])
    return history, best_epoch

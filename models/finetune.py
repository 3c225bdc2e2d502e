"""Fine-tuning the backbone's top with the decoder (features.finetune_from_block).

The feature step stores the map entering block N of an EfficientNet-Lite backbone
(`Backbone.build_split_models`); training runs blocks N.. and the head on it in every
step, under the decoder, with the top's own Adam (train.backbone_learning_rate) and its
BatchNormalization statistics frozen. The top shares its layers with the feature model,
so the serving export, built from that feature model, carries the trained weights: the
served graph and its latency are the frozen backbone's. Used by models/trainer.py and
bench/finetune_probe.py (which measured it: README, fine-tuning the backbone's top).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from models.contract import TRANSFORMED_GRID_KEY, TRANSFORMED_MAP_KEY
from models.export import image_input


def grid_of_maps(top: keras.Model, maps: tf.Tensor) -> tf.Tensor:
    """The top's grid of maps [B, h, w, c] as the decoder reads it, [B, h*w, C]; BatchNorm in
    inference mode, so its statistics stay frozen while its scale and offset may train."""
    return image_input(top(maps, training=False), TRANSFORMED_GRID_KEY)


class TopAndDecoder(keras.Model):
    """The backbone's top (map -> grid) under the decoder: one loss, two optimizers.

    Compile it with the decoder's optimizer and loss; `fit` trains the decoder with that one
    and the top with a second Adam at `top_learning_rate` (None: the top stays frozen, the
    side-by-side baseline of bench/finetune_probe)."""

    def __init__(self, top: keras.Model, captioner: keras.Model, top_learning_rate: float | None):
        super().__init__()
        self.top, self.captioner = top, captioner
        self.top.trainable = top_learning_rate is not None
        self.top_optimizer = keras.optimizers.Adam(top_learning_rate) if top_learning_rate is not None else None

    def call(self, inputs, training=False):
        """Maps of B images and tokens of B * K captions, image-major (K = 1 unless the
        batches are by image: models.trainer.caption_dataset): the grid is repeated K times."""
        grid = grid_of_maps(self.top, inputs[TRANSFORMED_MAP_KEY])
        tokens = inputs["tokens"]
        grid = tf.repeat(grid, tf.shape(tokens)[0] // tf.shape(grid)[0], axis=0)
        return self.captioner({TRANSFORMED_GRID_KEY: grid, "tokens": tokens}, training=training)

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            loss = self.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True)
        self._loss_tracker.update_state(loss, sample_weight=tf.shape(x["tokens"])[0])
        decoder_weights = self.captioner.trainable_weights
        top_weights = self.top.trainable_weights if self.top_optimizer else []
        gradients = tape.gradient(loss, decoder_weights + top_weights)
        self.optimizer.apply_gradients(zip(gradients[: len(decoder_weights)], decoder_weights))
        if top_weights:
            self.top_optimizer.apply_gradients(zip(gradients[len(decoder_weights) :], top_weights))
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)


class CaptionerOnMaps(keras.Model):
    """The decoder reading stored maps through the backbone's top, as one Captioner
    (encode_image, initial_state, step, teacher_forced, vocab_size: models/decoding.py), so
    that decoding and the SCST stage run on maps and can train the top with the decoder
    (models/scst.py, `top_learning_rate`; the top is frozen until that sets it trainable).
    BatchNorm statistics stay frozen either way."""

    def __init__(self, top: keras.Model, captioner: keras.Model):
        super().__init__()
        self.top, self.captioner = top, captioner
        self.top.trainable = False
        self.vocab_size = captioner.vocab_size

    def encode_image(self, inputs, training=False):
        return self.captioner.encode_image({TRANSFORMED_GRID_KEY: grid_of_maps(self.top, inputs[TRANSFORMED_MAP_KEY])},
                                           training=training)

    def initial_state(self, image):
        return self.captioner.initial_state(image)

    def step(self, tokens, states, image):
        return self.captioner.step(tokens, states, image)

    def teacher_forced(self, image, tokens, training=False):
        return self.captioner.teacher_forced(image, tokens, training=training)


def grids_of(top: keras.Model, maps: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """The top's grids of stored maps, [N, h*w, C] float16 as the Trainer keeps grids: what
    the SCST stage and the dev scorer read once the top has stopped training."""
    run = tf.function(lambda m: grid_of_maps(top, m))
    return np.concatenate([run(tf.constant(maps[i : i + batch_size], tf.float32)).numpy().astype(np.float16)
                           for i in range(0, len(maps), batch_size)])

"""models.finetune's model (the Trainer's and bench.finetune_probe's): the backbone's top trains with
its own optimizer, or not at all."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from models.finetune import TopAndDecoder
from models.attention import AttentionCaptioner

VOCAB, LENGTH = 12, 6


def _top() -> keras.Model:
    maps = keras.Input((3, 3, 4))
    x = keras.layers.Conv2D(8, 1, name="conv")(maps)
    x = keras.layers.BatchNormalization(name="bn")(x)
    return keras.Model(maps, {"grid": keras.layers.ReLU()(x)})


def _fit(top_learning_rate):
    keras.utils.set_random_seed(3)
    top = _top()
    captioner = AttentionCaptioner(VOCAB, 8, 8, 0.0, 8)
    model = TopAndDecoder(top, captioner, top_learning_rate)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    # Each image's captions are its own token repeated: learnable from the map alone.
    labels = rng.integers(2, VOCAB, 32)
    maps = rng.normal(size=(32, 3, 3, 4)).astype(np.float32) + labels[:, None, None, None] / 4.0
    tokens = np.repeat(labels[:, None], LENGTH, axis=1)
    tokens[:, 0] = 1
    x = {"image_map": maps, "tokens": tokens[:, :-1]}
    model(x)  # builds the decoder
    before = {w.path: w.numpy() for w in top.weights}
    decoder_before = [w.numpy() for w in captioner.trainable_weights]
    history = model.fit(x, tokens[:, 1:], batch_size=8, epochs=3, verbose=0).history
    changed = {w.path: not np.array_equal(w.numpy(), before[w.path]) for w in top.weights}
    assert decoder_before
    decoder_changed = any(not np.array_equal(w.numpy(), b) for w, b in zip(captioner.trainable_weights, decoder_before))
    return history["loss"], changed, decoder_changed


def test_the_top_trains_with_its_own_optimizer_and_batchnorm_statistics_stay_frozen():
    losses, changed, decoder_changed = _fit(1e-2)
    assert losses[-1] < losses[0]
    assert decoder_changed
    conv = [path for path in changed if "conv" in path]
    assert conv and all(changed[p] for p in conv)  # kernel and bias moved
    stats = [path for path in changed if "moving" in path]
    assert stats and not any(changed[p] for p in stats)  # inference-mode BatchNorm


def test_frozen_trains_the_decoder_only():
    losses, changed, decoder_changed = _fit(None)
    assert decoder_changed and losses[-1] < losses[0]
    assert not any(changed.values())

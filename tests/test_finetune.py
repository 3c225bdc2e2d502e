"""models.finetune's model (the Trainer's and bench.finetune_probe's): the backbone's top trains with
its own optimizer, or not at all."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from models.attention import AttentionCaptioner
from models.finetune import TopAndDecoder
from models.trainer import CaptionRows, caption_dataset

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


def _rows_with_uneven_captions():
    """Six images, five captions each but image 4 with three; each caption names its image's label."""
    rng = np.random.default_rng(1)
    labels = rng.integers(2, VOCAB, 6)
    maps = (rng.normal(size=(6, 3, 3, 4)) + labels[:, None, None, None] / 4.0).astype(np.float16)
    index, captions = [], []
    for image, label in enumerate(labels):
        for _ in range(3 if image == 4 else 5):
            caption = np.zeros(LENGTH + 2, dtype=np.int64)
            caption[0], caption[1 : 1 + LENGTH] = 1, label
            index.append(image)
            captions.append(caption)
    return CaptionRows({"image_map": maps}, np.array(index, dtype=np.int32), np.stack(captions))


def test_batches_by_image_hold_each_caption_once_beside_its_own_image():
    rows = _rows_with_uneven_captions()
    batches = list(caption_dataset(rows, batch_size=10, shuffle_seed=7, by_image=True))
    assert [len(x["image_map"]) for x, _, _ in batches] == [2, 2, 2]  # 10 // 5 images a batch
    seen = []
    for x, targets, mask in batches:
        tokens = x["tokens"].numpy().reshape(len(x["image_map"]), 5, -1)
        for image_map, own in zip(x["image_map"].numpy(), tokens):
            image = int(np.flatnonzero((rows.images["image_map"].astype(np.float32) == image_map).all(axis=(1, 2, 3)))[0])
            real = own[own[:, 0] != 0]
            assert (real[:, 1] == rows.captions[rows.image_index == image][0, 1]).all()  # its own captions
            seen.append((image, len(real)))
        assert mask.numpy().sum() == (targets.numpy() != 0).sum()  # padding rows carry no weight
    assert sorted(seen) == [(0, 5), (1, 5), (2, 5), (3, 5), (4, 3), (5, 5)]


def test_by_image_the_model_scores_every_caption_against_its_own_image():
    """The loss over batches by image is the loss over the same captions batched one by one:
    the top's grid is repeated beside the right captions."""
    keras.utils.set_random_seed(3)
    rows = _rows_with_uneven_captions()
    model = TopAndDecoder(_top(), AttentionCaptioner(VOCAB, 8, 8, 0.0, 8), None)
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="sum"))
    by_caption = caption_dataset(rows, batch_size=len(rows.captions), shuffle_seed=None)
    by_image = caption_dataset(rows, batch_size=30, shuffle_seed=None, by_image=True)
    x, y, mask = next(iter(by_image))
    assert len(x["image_map"]) == 6 and len(x["tokens"]) == 30
    expected = model.evaluate(by_caption, verbose=0)
    assert model.evaluate(by_image, verbose=0) == pytest.approx(expected, rel=1e-5)
    shuffled = {**x, "image_map": x["image_map"][::-1]}  # the wrong images for the captions
    assert float(model.compute_loss(shuffled, y, model(shuffled), mask)) > 1.01 * expected

"""bench.decoding's step counts and its 'steps alone' side: what its per-step figures divide by
and what its lower bound (the search for free) runs."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from bench.decoding import loop_steps_of, side_figures, steps_alone
from models.attention import AttentionCaptioner
from models.export import image_input
from models.images import decode_images

VOCAB, SIZE = 11, 16


def test_loop_steps_count_words_plus_end_and_the_longest_beam():
    assert loop_steps_of("greedy", {"caption": tf.constant(["a dog runs"])}, max_steps=15) == 4
    # The beam loop runs until the last of its beams ends, not the best one.
    alternatives = tf.constant([["a dog", "a dog runs on grass", "dog"]])
    assert loop_steps_of("beam_search", {"caption": alternatives[:, 0], "alternatives": alternatives}, max_steps=15) == 6
    # A caption cut at max_length has no <end>: the loop ran max_length - 1 steps.
    assert loop_steps_of("greedy", {"caption": tf.constant(["a dog runs on grass"])}, max_steps=5) == 5


def test_each_side_is_divided_by_its_own_loops_steps():
    p50 = {"backbone": 20.0, "this checkout greedy": 30.0, "this checkout beam_search": 44.0, "steps alone beam_search": 38.0}
    steps = {"greedy": 10.0, "beam_search": 12.0}
    assert side_figures("this checkout greedy", p50, steps) == (1.5, 1.0)
    assert side_figures("this checkout beam_search", p50, steps) == (2.2, 2.0)  # 24 ms over 12 steps, not 10
    assert side_figures("steps alone beam_search", p50, steps) == (1.9, 1.5)


def _feature_model() -> keras.Model:
    images = keras.Input((SIZE, SIZE, 3))
    grid = keras.layers.Conv2D(4, 8, strides=8, name="conv")(images)
    return keras.Model(images, {"grid": grid, "pooled": keras.layers.GlobalAveragePooling2D()(grid)})


def test_steps_alone_runs_the_decoder_step_the_asked_times_on_copies_of_the_image():
    keras.utils.set_random_seed(5)
    feature_model = _feature_model()
    captioner = AttentionCaptioner(VOCAB, 8, 8, 0.0, 8)
    pixels = np.random.default_rng(0).integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)
    encoded = tf.constant([tf.io.encode_png(pixels).numpy()])

    grid = image_input(feature_model(decode_images(encoded, SIZE)), "image_grid")
    captioner({"image_grid": grid, "tokens": tf.zeros([1, 2], tf.int64)})  # builds it
    image = captioner.encode_image({"image_grid": grid})
    states = captioner.initial_state(image)
    expected = []
    for _ in range(3):
        logits, states = captioner.step(tf.ones([1], tf.int64), states, image)
        expected.append(logits.numpy())

    one_row = steps_alone(feature_model, SIZE, captioner, rows=1)
    three_rows = steps_alone(feature_model, SIZE, captioner, rows=3)
    np.testing.assert_allclose(one_row(encoded, tf.constant(3)).numpy(), expected[2], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(one_row(encoded, tf.constant(1)).numpy(), expected[0], rtol=1e-5, atol=1e-6)
    # The K rows of beam search: the same image repeated, so every row is the one-row result.
    rows = three_rows(encoded, tf.constant(3)).numpy()
    assert rows.shape == (3, VOCAB)
    np.testing.assert_allclose(rows, np.repeat(expected[2], 3, axis=0), rtol=1e-5, atol=1e-6)

"""bench.decode_sweep's end bias: the sweep's decoder with <end> made less likely, and nothing else."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from bench.decode_sweep import EndBiased
from models.attention import AttentionCaptioner
from models.decoding import greedy_decode

VOCAB, END = 9, 2


def test_end_bias_lowers_only_the_end_logit_and_lengthens_greedy_captions():
    keras.utils.set_random_seed(1)
    captioner = AttentionCaptioner(VOCAB, 8, 8, 0.0, 8)
    grid = tf.random.normal([4, 3, 5])
    captioner({"image_grid": grid, "tokens": tf.zeros([4, 2], tf.int64)})
    # A decoder that ends at once: <end> far ahead of every other token.
    captioner.logits.bias.assign(tf.one_hot(END, VOCAB) * 10.0)
    image = captioner.encode_image({"image_grid": grid})
    states = captioner.initial_state(image)
    tokens = tf.ones([4], tf.int64)
    plain, _ = captioner.step(tokens, states, image)
    biased, _ = EndBiased(captioner, END, 25.0).step(tokens, states, image)
    np.testing.assert_allclose(biased.numpy()[:, END], plain.numpy()[:, END] - 25.0, rtol=1e-5)
    others = [i for i in range(VOCAB) if i != END]
    np.testing.assert_array_equal(biased.numpy()[:, others], plain.numpy()[:, others])

    ids = dict(start_id=1, end_id=END, pad_id=0, max_length=6)
    short, _ = greedy_decode(captioner, {"image_grid": grid}, **ids)
    long, _ = greedy_decode(EndBiased(captioner, END, 25.0), {"image_grid": grid}, **ids)
    assert (short.numpy()[:, 0] == END).all()  # ends at once
    assert not (long.numpy() == END).any()  # never ends: runs to max_length
    assert long.shape[1] == 5

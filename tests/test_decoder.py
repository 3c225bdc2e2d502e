"""The decoder's two paths agree, and in-graph decoding does what the Python loop would."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from models.decoder import MergeCaptioner
from models.decoding import beam_search_decode, greedy_decode

VOCAB = 9
START, END, PAD = 1, 2, 0


@pytest.fixture(scope="module")
def model() -> MergeCaptioner:
    m = MergeCaptioner(VOCAB, embedding_dim=8, hidden_dim=16, dropout=0.2)
    m({"image_features": tf.zeros((1, 5)), "tokens": tf.zeros((1, 4), tf.int64)})
    # Large random weights make the argmax path depend on the image, as a trained model does.
    for i, v in enumerate(m.trainable_variables):
        v.assign(tf.random.stateless_normal(v.shape, seed=[1, i]) * 0.8)
    return m


def test_step_path_matches_teacher_forced_path(model):
    features = tf.random.stateless_normal((3, 5), seed=[2, 3])
    tokens = tf.constant([[START, 4, 5, 6], [START, 3, 3, 8], [START, 7, 2, 0]], tf.int64)
    full = model({"image_features": features, "tokens": tokens}).numpy()
    image = model.encode_image(features)
    states = model.initial_state(image)
    for t in range(tokens.shape[1]):
        logits, states = model.step(tokens[:, t], states, image)
        np.testing.assert_allclose(logits.numpy(), full[:, t], rtol=1e-4, atol=1e-4)


def _python_greedy(model, features, max_length):
    """The notebook's way, one step per Python iteration: the reference."""
    image = model.encode_image(features)
    states = model.initial_state(image)
    token = tf.constant([START], tf.int64)
    out, log_probability = [], 0.0
    for _ in range(max_length - 1):
        logits, states = model.step(token, states, image)
        token = tf.argmax(logits, axis=-1)
        log_probability += float(tf.nn.log_softmax(logits)[0, int(token[0])])
        out.append(int(token[0]))
        if out[-1] == END:
            break
    return out, log_probability


def test_greedy_in_graph_equals_python_loop(model):
    features = tf.random.stateless_normal((4, 5), seed=[4, 5])
    graph_greedy = tf.function(lambda f: greedy_decode(model, f, START, END, PAD, max_length=7))
    ids, log_probability = graph_greedy(features)
    for row, f, lp in zip(ids.numpy(), features, log_probability.numpy()):
        expected, expected_lp = _python_greedy(model, f[None], max_length=7)
        got = [int(t) for t in row[: len(expected)]]
        assert got == expected
        assert all(t == PAD for t in row[len(expected):])
        assert lp == pytest.approx(expected_lp, abs=1e-4)


def test_beam_width_one_is_greedy_and_scores_are_sorted(model):
    features = tf.random.stateless_normal((4, 5), seed=[6, 7])
    greedy = greedy_decode(model, features, START, END, PAD, max_length=7)[0].numpy()
    beam_ids, _ = beam_search_decode(model, features, START, END, PAD, 7, beam_width=1, length_penalty=0.0)
    beam_ids = beam_ids.numpy()[:, 0, :]
    width = min(greedy.shape[1], beam_ids.shape[1])
    np.testing.assert_array_equal(beam_ids[:, :width], greedy[:, :width])

    ids, scores = tf.function(
        lambda f: beam_search_decode(model, f, START, END, PAD, 7, beam_width=3, length_penalty=0.7)
    )(features)
    scores = scores.numpy()
    assert ids.shape[:2] == (4, 3)
    assert np.all(np.diff(scores, axis=1) <= 1e-6), scores
    # The beams of one image are different captions.
    for row in ids.numpy():
        assert len({tuple(r) for r in row}) == 3


def test_beam_finds_a_sequence_at_least_as_likely_as_greedy(model):
    features = tf.random.stateless_normal((6, 5), seed=[8, 9])

    def log_prob(sequence, f):
        image = model.encode_image(f[None])
        states = model.initial_state(image)
        token, total = tf.constant([START], tf.int64), 0.0
        for t in sequence:
            logits, states = model.step(token, states, image)
            total += float(tf.nn.log_softmax(logits)[0, t])
            token = tf.constant([t], tf.int64)
            if t == END:
                break
        return total

    greedy = greedy_decode(model, features, START, END, PAD, max_length=7)[0].numpy()
    beams, _ = beam_search_decode(model, features, START, END, PAD, 7, beam_width=4, length_penalty=0.0)
    for f, g, b in zip(features, greedy, beams.numpy()[:, 0]):
        assert log_prob(list(b), f) >= log_prob(list(g), f) - 1e-4

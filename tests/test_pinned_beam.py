"""Beam search ranking and scores pinned with a stub model of fixed next-token probabilities.

The stub is a Markov chain: the next-token distribution depends only on the previous token.
From <start> the caption is "a", then either "<end>" (0.55) or "b c <end>" (0.45, 0.99,
0.99). The short caption is the more likely one; divided by length**0.7 (the configured
length penalty) the long one wins. Expected scores are computed here with numpy from the
same table: sum of log-probabilities up to and including <end>, over (that length)**alpha.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from configs.config import DecodeConfig
from models.decoding import beam_search_decode, greedy_decode

PAD, START, END, A, B, C = 0, 1, 2, 3, 4, 5
VOCAB = 6
TINY = 1e-6


def _table() -> np.ndarray:
    probs = np.full((VOCAB, VOCAB), TINY)
    probs[START, A] = 1.0
    probs[A, END], probs[A, B] = 0.55, 0.45
    probs[B, C] = 0.99
    probs[C, END] = 0.99
    probs[PAD, PAD] = probs[END, PAD] = 1.0  # never read by the decoder once a beam ends
    return np.log(probs / probs.sum(axis=1, keepdims=True))


LOG_P = _table()


class MarkovStub:
    """The model interface decoding.py uses: encode_image, initial_state, step, vocab_size."""

    vocab_size = VOCAB

    def encode_image(self, inputs):
        return inputs["image_features"]

    def initial_state(self, image):
        return [tf.zeros([tf.shape(image)[0]], tf.int64)]

    def step(self, tokens, states, image):
        return tf.gather(tf.constant(LOG_P, tf.float32), tokens), [tokens]


def expected_score(caption: list[int], alpha: float) -> float:
    tokens = [START, *caption]
    log_p = sum(LOG_P[prev, nxt] for prev, nxt in zip(tokens, tokens[1:]))
    return log_p / len(caption) ** alpha


def decode(alpha: float, batch: int = 2, max_length: int = 8):
    inputs = {"image_features": tf.zeros([batch, 1])}
    ids, scores = beam_search_decode(MarkovStub(), inputs, START, END, PAD, max_length, beam_width=3, length_penalty=alpha)
    return ids.numpy(), scores.numpy()


def caption(row: np.ndarray) -> list[int]:
    out = []
    for t in row:
        out.append(int(t))
        if t == END:
            break
    return out


def padded(tokens: list[int], width: int) -> list[int]:
    return tokens + [PAD] * (width - len(tokens))


def test_the_configured_length_penalty_makes_the_long_caption_win():
    alpha = DecodeConfig().length_penalty
    assert alpha == 0.7
    ids, scores = decode(alpha)
    for image in range(2):
        assert caption(ids[image, 0]) == [A, B, C, END]
        assert caption(ids[image, 1]) == [A, END]
        assert ids[image, 1].tolist() == padded([A, END], ids.shape[2])  # pad after <end>
        assert scores[image, 0] == pytest.approx(expected_score([A, B, C, END], alpha), rel=1e-5)
        assert scores[image, 1] == pytest.approx(expected_score([A, END], alpha), rel=1e-5)


def test_without_length_penalty_the_more_likely_short_caption_wins():
    ids, scores = decode(0.0)
    assert caption(ids[0, 0]) == [A, END] and caption(ids[0, 1]) == [A, B, C, END]
    assert scores[0, 0] == pytest.approx(np.log(0.55 / (1 + 4 * TINY)) + LOG_P[START, A], rel=1e-5)
    assert scores[0, 1] == pytest.approx(expected_score([A, B, C, END], 0.0), rel=1e-5)


@pytest.mark.parametrize("alpha", [0.5, 1.0])
def test_scores_are_log_probability_over_length_to_the_end_token(alpha):
    # The decoding runs on for max_length steps; steps after <end> must not add to the length.
    ids, scores = decode(alpha, batch=1, max_length=10)
    found = {tuple(caption(row)): s for row, s in zip(ids[0], scores[0])}
    for c in ([A, END], [A, B, C, END]):
        assert found[tuple(c)] == pytest.approx(expected_score(c, alpha), rel=1e-5)
    assert np.all(np.diff(scores[0]) <= 0)


def test_greedy_takes_the_likeliest_token_each_step():
    ids, log_probability = greedy_decode(MarkovStub(), {"image_features": tf.zeros([1, 1])}, START, END, PAD, max_length=6)
    assert caption(ids.numpy()[0]) == [A, END]
    assert ids.numpy()[0].tolist() == padded([A, END], ids.shape[1])
    assert log_probability.numpy()[0] == pytest.approx(LOG_P[START, A] + LOG_P[A, END], rel=1e-5)


def _log_table(entries: dict[tuple[int, int], float]) -> np.ndarray:
    probs = np.full((VOCAB, VOCAB), TINY)
    for (prev, nxt), p in entries.items():
        probs[prev, nxt] = p
    probs[PAD, PAD] = probs[END, PAD] = 1.0
    return np.log(probs / probs.sum(axis=1, keepdims=True))


class TableStub(MarkovStub):
    """MarkovStub over a table of its own."""

    def __init__(self, log_p: np.ndarray):
        self.log_p = tf.constant(log_p, tf.float32)

    def step(self, tokens, states, image):
        return tf.gather(self.log_p, tokens), [tokens]


def _beam(log_p: np.ndarray, max_length: int, alpha: float = 0.7, no_repeat: int = 0):
    inputs = {"image_features": tf.zeros([1, 1])}
    ids, scores = beam_search_decode(TableStub(log_p), inputs, START, END, PAD, max_length, beam_width=3,
                                     length_penalty=alpha, no_repeat_ngram_size=no_repeat)
    return ids.numpy()[0], scores.numpy()[0]


def test_a_caption_that_never_ends_runs_to_max_length_minus_one_tokens():
    log_p = _log_table({(START, A): 1.0, (A, A): 1.0})
    ids, scores = _beam(log_p, max_length=6)
    assert list(ids[0]) == [A] * 5  # <start> plus 5 tokens fill max_length 6
    assert scores[0] == pytest.approx((log_p[START, A] + 4 * log_p[A, A]) / 5 ** 0.7, abs=1e-5)


def test_a_caption_of_just_end_is_scored_by_its_log_probability_alone():
    log_p = _log_table({(START, END): 0.9, (START, A): 0.1, (A, END): 1.0})
    ids, scores = _beam(log_p, max_length=6)
    assert caption(ids[0]) == [END]
    assert scores[0] == pytest.approx(log_p[START, END], abs=1e-6)  # divided by 1**alpha: unchanged


def test_no_repeated_words_with_a_block_of_single_words():
    # Left alone, the best beam says "a a a a a" (0.8 a step); blocking 1-grams forbids any word twice.
    log_p = _log_table({(START, A): 1.0, (A, A): 0.8, (A, B): 0.1, (A, END): 0.1, (B, END): 0.9, (B, A): 0.1})
    free, _ = _beam(log_p, max_length=6)
    assert list(free[0]) == [A] * 5
    ids, _ = _beam(log_p, max_length=6, no_repeat=1)
    for row in ids:
        words = [int(t) for t in caption(row) if t not in (END, PAD)]
        assert len(words) == len(set(words)), row
    assert caption(ids[0]) == [A, B, END]

"""Both decoders' two paths agree, and in-graph decoding does what the Python loop would.

Every test runs for the merge model and for the attention model.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from models.attention import AttentionCaptioner
from models.decoder import MergeCaptioner
from models.decoding import beam_search_decode, greedy_decode, repeated_ngram_mask, replay_attention

VOCAB = 9
START, END, PAD = 1, 2, 0


GRID_CELLS = 4


@pytest.fixture(scope="module", params=["merge", "attention"])
def model(request):
    if request.param == "merge":
        m = MergeCaptioner(VOCAB, embedding_dim=8, hidden_dim=16, dropout=0.2)
    else:
        m = AttentionCaptioner(VOCAB, embedding_dim=8, hidden_dim=16, dropout=0.2, attention_dim=6)
    m({**image_inputs(m, 1, seed=0), "tokens": tf.zeros((1, 4), tf.int64)})
    # Large random weights make the argmax path depend on the image, as a trained model does.
    for i, v in enumerate(m.trainable_variables):
        v.assign(tf.random.stateless_normal(v.shape, seed=[1, i]) * 0.8)
    return m


def image_inputs(model, batch: int, seed: int) -> dict[str, tf.Tensor]:
    """Random image inputs of the kind the model reads: pooled [B, 5] or a grid [B, 4, 5]."""
    shapes = {"image_features": (batch, 5), "image_grid": (batch, GRID_CELLS, 5)}
    return {
        name: tf.random.stateless_normal(shapes[name], seed=[seed, i])
        for i, name in enumerate(model.image_inputs)
    }


def one(inputs: dict[str, tf.Tensor], i: int) -> dict[str, tf.Tensor]:
    return {k: v[i : i + 1] for k, v in inputs.items()}


def test_step_path_matches_teacher_forced_path(model):
    features = image_inputs(model, 3, seed=2)
    tokens = tf.constant([[START, 4, 5, 6], [START, 3, 3, 8], [START, 7, 2, 0]], tf.int64)
    full = model({**features, "tokens": tokens}).numpy()
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
    features = image_inputs(model, 4, seed=4)
    graph_greedy = tf.function(lambda f: greedy_decode(model, f, START, END, PAD, max_length=7))
    ids, log_probability = graph_greedy(features)
    for i, (row, lp) in enumerate(zip(ids.numpy(), log_probability.numpy())):
        expected, expected_lp = _python_greedy(model, one(features, i), max_length=7)
        got = [int(t) for t in row[: len(expected)]]
        assert got == expected
        assert all(t == PAD for t in row[len(expected):])
        assert lp == pytest.approx(expected_lp, abs=1e-4)


def test_beam_width_one_is_greedy_and_scores_are_sorted(model):
    features = image_inputs(model, 4, seed=6)
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
    features = image_inputs(model, 6, seed=8)

    def log_prob(sequence, f):
        image = model.encode_image(f)
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
    for i, (g, b) in enumerate(zip(greedy, beams.numpy()[:, 0])):
        assert log_prob(list(b), one(features, i)) >= log_prob(list(g), one(features, i)) - 1e-4


def test_attention_weights_are_a_distribution_over_the_grid_and_depend_on_it():
    m = AttentionCaptioner(VOCAB, embedding_dim=8, hidden_dim=16, dropout=0.0, attention_dim=6)
    grid = tf.random.stateless_normal((2, GRID_CELLS, 5), seed=[3, 1])
    m({"image_grid": grid, "tokens": tf.zeros((2, 3), tf.int64)})
    image = m.encode_image({"image_grid": grid})
    h = tf.random.stateless_normal((2, 16), seed=[3, 2])
    context, weights = m.attend(h, image)
    assert weights.shape == (2, GRID_CELLS) and context.shape == (2, 16)
    np.testing.assert_allclose(weights.numpy().sum(axis=1), 1.0, rtol=1e-5)
    assert np.all(weights.numpy() > 0)
    # Changing what one cell holds changes the caption logits: the model looks at the grid.
    shuffled = tf.concat([grid[:, :1] * 3.0, grid[:, 1:]], axis=1)
    tokens = tf.constant([[START, 4, 5]] * 2, tf.int64)
    a = m({"image_grid": grid, "tokens": tokens}).numpy()
    b = m({"image_grid": shuffled, "tokens": tokens}).numpy()
    assert not np.allclose(a, b)


def test_replayed_attention_is_what_greedy_decoding_looked_at_word_by_word(model):
    """The web page's heat map: for each word of the chosen caption, the weights the loop used
    (recomputed here step by step with `attend` on the state before each word) and its probability."""
    if not hasattr(model, "step_with_attention"):
        pytest.skip("the merge model has no attention")
    features = image_inputs(model, 3, seed=8)
    ids, log_probability = greedy_decode(model, features, START, END, PAD, max_length=7)
    weights, probabilities = tf.function(lambda f, i: replay_attention(model, f, i, START, PAD))(features, ids)
    assert weights.shape == (*ids.shape, GRID_CELLS) and probabilities.shape == ids.shape
    for b in range(3):
        image = model.encode_image(one(features, b))
        states = model.initial_state(image)
        token = tf.constant([START], tf.int64)
        row = [int(t) for t in ids[b].numpy()]
        length = row.index(END) + 1 if END in row else len(row)
        for t in range(length):
            _, expected = model.attend(states[0], image)
            np.testing.assert_allclose(weights[b, t].numpy(), expected[0].numpy(), rtol=1e-4, atol=1e-6)
            _, states = model.step(token, states, image)
            token = tf.constant([row[t]], tf.int64)
        assert np.all(weights[b, length:].numpy() == 0) and np.all(probabilities[b, length:].numpy() == 0)
        np.testing.assert_allclose(weights[b, :length].numpy().sum(axis=-1), 1.0, rtol=1e-5)
        # The words' probabilities multiply to the caption's: sum of logs == greedy's log-probability.
        assert np.log(probabilities[b, :length].numpy()).sum() == pytest.approx(float(log_probability[b]), abs=1e-4)


def _blocked(sequence: list[int], n: int) -> set[int]:
    mask = repeated_ngram_mask(tf.constant([[sequence]], tf.int64, shape=[1, 1, len(sequence)]), VOCAB, n)
    return {int(i) for i in np.flatnonzero(mask.numpy()[0, 0])}


def test_repeated_ngram_mask_blocks_exactly_the_tokens_that_would_repeat_an_ngram():
    assert _blocked([5, 6, 5], 2) == {6}  # "5 6" again
    assert _blocked([5, 6, 7, 5, 6], 3) == {7}  # "5 6 7" again
    assert _blocked([5, 6, 7, 5, 6], 2) == {7}  # after 6 came 7
    assert _blocked([3, 3], 2) == {3}
    assert _blocked([5, 6, 7, 8], 2) == set()
    assert _blocked([5], 2) == set() and _blocked([], 3) == set() and _blocked([5, 5], 3) == set()


def _repeats_a_bigram(row) -> bool:
    """Over the caption up to <end> (a random model also emits the pad id as a word)."""
    tokens = [int(t) for t in row]
    tokens = tokens[: tokens.index(END)] if END in tokens else tokens
    bigrams = list(zip(tokens, tokens[1:]))
    return len(bigrams) != len(set(bigrams))


def test_no_repeat_ngram_size_2_removes_repeated_bigrams_from_greedy_and_beam_captions(model):
    features = image_inputs(model, 16, seed=10)
    max_length = 12
    plain = greedy_decode(model, features, START, END, PAD, max_length)[0].numpy()
    assert any(_repeats_a_bigram(row) for row in plain)  # the random model does repeat itself
    blocked = tf.function(lambda f: greedy_decode(model, f, START, END, PAD, max_length, no_repeat_ngram_size=2))
    greedy, log_probability = blocked(features)
    assert not any(_repeats_a_bigram(row) for row in greedy.numpy())
    # Captions without a repeat are the same as before, to the token.
    for before, after in zip(plain, greedy.numpy()):
        if not _repeats_a_bigram(before):
            np.testing.assert_array_equal(before, after[: len(before)])
    assert np.all(np.isfinite(log_probability.numpy()))
    beams, scores = tf.function(
        lambda f: beam_search_decode(model, f, START, END, PAD, max_length, 3, 0.7, no_repeat_ngram_size=2)
    )(features)
    assert not any(_repeats_a_bigram(row) for image in beams.numpy() for row in image)
    assert np.all(scores.numpy() > -1e8)  # no beam had to take a blocked token

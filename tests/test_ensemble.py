"""models.ensemble: N decoders decoded as one, by the same greedy and beam search code."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from models.attention import AttentionCaptioner
from models.decoder import MergeCaptioner
from models.decoding import beam_search_decode, greedy_decode
from models.ensemble import EnsembleCaptioner, member_key
from tests.test_decoder import END, PAD, START, VOCAB, image_inputs

IDS = {"start_id": START, "end_id": END, "pad_id": PAD}


def _random_model(kind: str, seed: int, vocab: int = VOCAB):
    if kind == "merge":
        m = MergeCaptioner(vocab, embedding_dim=8, hidden_dim=16, dropout=0.0)
    else:
        m = AttentionCaptioner(vocab, embedding_dim=8, hidden_dim=16, dropout=0.0, attention_dim=6)
    m({**image_inputs(m, 1, seed=0), "tokens": tf.zeros((1, 4), tf.int64)})
    for i, v in enumerate(m.trainable_variables):  # large weights: captions depend on the image
        v.assign(tf.random.stateless_normal(v.shape, seed=[seed, i]) * 0.8)
    return m


def _inputs(members, batch: int = 6) -> dict[str, tf.Tensor]:
    """Each member's own random image inputs under its ensemble name."""
    return {member_key(i, name): t for i, m in enumerate(members)
            for name, t in image_inputs(m, batch, seed=10 + i).items()}


def _decode(model, inputs, beam_width: int):
    if beam_width == 1:
        return greedy_decode(model, inputs, max_length=7, **IDS)
    sequences, scores = beam_search_decode(model, inputs, max_length=7, beam_width=beam_width, length_penalty=0.7, **IDS)
    return sequences, scores


@pytest.mark.parametrize("kind", ["merge", "attention"])
@pytest.mark.parametrize("beam_width", [1, 3])
def test_an_ensemble_of_one_model_or_of_two_copies_captions_as_the_model_does(kind, beam_width):
    model = _random_model(kind, seed=1)
    inputs = image_inputs(model, 6, seed=10)
    alone_ids, alone_scores = _decode(model, inputs, beam_width)
    for copies in (1, 2):
        ensemble = EnsembleCaptioner([model] * copies)
        ids, scores = _decode(ensemble, {member_key(i, k): v for i in range(copies) for k, v in inputs.items()}, beam_width)
        np.testing.assert_array_equal(ids.numpy(), alone_ids.numpy())
        np.testing.assert_allclose(scores.numpy(), alone_scores.numpy(), rtol=1e-5, atol=1e-5)


def test_each_step_is_the_mean_of_the_members_probabilities_for_mixed_architectures():
    members = [_random_model("merge", seed=1), _random_model("attention", seed=2), _random_model("attention", seed=3)]
    ensemble = EnsembleCaptioner(members)
    inputs = _inputs(members)
    tokens = tf.constant([START, 3, 4, 5, 6, 7], tf.int64)
    log_probs, states = ensemble.step(tokens, ensemble.initial_state(ensemble.encode_image(inputs)), ensemble.encode_image(inputs))
    expected = np.mean([
        tf.nn.softmax(m.step(tokens, m.initial_state(m.encode_image(ensemble.member_inputs(inputs, i))),
                             m.encode_image(ensemble.member_inputs(inputs, i)))[0]).numpy()
        for i, m in enumerate(members)
    ], axis=0)
    np.testing.assert_allclose(np.exp(log_probs.numpy()), expected, rtol=1e-5, atol=1e-6)
    assert len(states) == 6  # (h, c) of each member


def test_the_ensemble_picks_what_the_members_agree_on_not_what_one_member_wants():
    """Greedy over the mean probability differs from each member's greedy caption somewhere."""
    members = [_random_model("attention", seed=s) for s in (4, 5)]
    inputs = _inputs(members, batch=12)
    ensemble = EnsembleCaptioner(members)
    ensemble_ids, _ = _decode(ensemble, inputs, 1)
    alone = [_decode(m, ensemble.member_inputs(inputs, i), 1)[0] for i, m in enumerate(members)]
    for ids in alone:
        assert not np.array_equal(ensemble_ids.numpy(), ids.numpy())


def test_members_with_different_vocabularies_are_refused():
    with pytest.raises(ValueError, match="vocabularies differ"):
        EnsembleCaptioner([_random_model("merge", seed=1), _random_model("merge", seed=2, vocab=VOCAB + 1)])

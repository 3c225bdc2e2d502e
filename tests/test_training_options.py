"""The training options of issue 7: learning-rate decay on a plateau and attention coverage.

Real Keras fits on tiny random data: what a user notices is the learning rate in the
history and the loss the attention model is trained on.
"""

from __future__ import annotations


import numpy as np
import pytest
import tensorflow as tf

from models.attention import AttentionCaptioner
from configs.config import TrainerSections
from tests.runs import trainer_sections, with_changes
from models.trainer import build_model, fit_callbacks

VOCAB, LENGTH, CELLS, CHANNELS = 12, 6, 4, 5


def config(**changes) -> TrainerSections:
    return trainer_sections(embedding_dim=8, hidden_dim=16, attention_dim=6, **changes)


def batches(seed: int, images: int = 32):
    """(inputs, targets, mask) like caption_dataset's: random grids and captions, no padding."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(3, VOCAB, size=(images, LENGTH + 1))
    tokens[:, 0] = 1
    inputs = {"image_grid": rng.normal(size=(images, CELLS, CHANNELS)).astype("float32"), "tokens": tokens[:, :-1]}
    return tf.data.Dataset.from_tensor_slices((inputs, tokens[:, 1:], np.ones((images, LENGTH), "float32"))).batch(8)


def fit(cfg: TrainerSections, epochs: int, eval_seed: int = 1) -> dict[str, list[float]]:
    """Eval captions from another seed are unrelated to training: eval loss soon stalls."""
    tf.keras.utils.set_random_seed(cfg.train.seed)
    model = build_model(VOCAB, cfg)
    history = model.fit(
        batches(0), validation_data=batches(eval_seed), epochs=epochs, callbacks=fit_callbacks(cfg), verbose=0
    )
    return history.history


def test_the_learning_rate_halves_after_each_epoch_without_eval_progress():
    cfg = config(learning_rate=0.01, lr_decay_factor=0.5, lr_decay_min_delta=10.0, early_stopping_patience=10)
    history = fit(cfg, epochs=4)
    # min_delta 10: after the first epoch (progress from nothing) none counts as progress,
    # so every later epoch ends with a decay.
    np.testing.assert_allclose(history["learning_rate"], [0.01, 0.01, 0.005, 0.0025], rtol=1e-6)


def test_the_learning_rate_stays_when_decay_is_off_or_eval_loss_improves():
    assert "learning_rate" not in fit(config(learning_rate=0.01), epochs=2)
    # Evaluated on its own training captions, the model improves every epoch: no decay.
    improving = config(learning_rate=0.01, lr_decay_factor=0.5, early_stopping_patience=10)
    history = fit(improving, epochs=3, eval_seed=0)
    assert np.all(np.diff(history["val_loss"]) < 0)
    np.testing.assert_allclose(history["learning_rate"], [0.01] * 3, rtol=1e-6)


def test_coverage_penalty_is_zero_when_every_cell_gets_one_unit_of_attention_over_the_caption():
    one_cell_per_step = tf.eye(CELLS)[None]  # step t attends to cell t only
    tokens = tf.constant([[1, 5, 6, 7]])
    assert float(AttentionCaptioner._coverage_penalty(one_cell_per_step, tokens)) == pytest.approx(0.0)
    # Staring at one cell for the whole caption leaves the others uncovered.
    staring = tf.one_hot([[0, 0, 0, 0]], CELLS)
    expected = ((1 - 4) ** 2 + 3 * 1) / CELLS
    assert float(AttentionCaptioner._coverage_penalty(staring, tokens)) == pytest.approx(expected)
    # Padding positions do not count, whatever they attend to.
    padded = tf.constant([[1, 5, 0, 0]])
    assert float(AttentionCaptioner._coverage_penalty(one_cell_per_step, padded)) == pytest.approx(2 / CELLS)


def test_coverage_adds_to_the_training_loss_only_and_keeps_the_model_serializable():
    inputs = next(iter(batches(0)))[0]
    plain = AttentionCaptioner(VOCAB, 8, 16, 0.0, 6)
    covered = AttentionCaptioner.from_config({**plain.get_config(), "attention_coverage": 2.0})
    assert covered.get_config()["attention_coverage"] == 2.0
    plain(inputs, training=True)
    assert plain.losses == []
    covered(inputs, training=False)
    assert covered.losses == []
    covered(inputs, training=True)
    (penalty,) = covered.losses
    assert float(penalty) > 0.0


def test_training_with_coverage_spreads_attention_over_the_grid():
    cfg = config(dropout=0.0, learning_rate=0.01)
    inputs = next(iter(batches(0)))[0]
    uncovered = {}
    for coverage in (0.0, 5.0):
        tf.keras.utils.set_random_seed(cfg.train.seed)
        model = build_model(VOCAB, with_changes(cfg, attention_coverage=coverage))
        model.fit(batches(0), epochs=8, verbose=0)
        uncovered[coverage] = float(AttentionCaptioner._coverage_penalty(attention_maps(model, inputs), inputs["tokens"]))
    assert uncovered[5.0] < 0.5 * uncovered[0.0]


def attention_maps(model: AttentionCaptioner, inputs) -> tf.Tensor:
    """[B, T, cells]: where the model looks at each step of the teacher-forced captions."""
    image = model.encode_image(inputs)
    states = model.initial_state(image)
    maps = []
    for t in range(inputs["tokens"].shape[1]):
        maps.append(model.attend(states[0], image)[1])
        _, states = model.step(inputs["tokens"][:, t], states, image)
    return tf.stack(maps, axis=1)

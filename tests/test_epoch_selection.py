"""Choosing the kept epoch by greedy eval BLEU (train.select_by) instead of eval loss.

Real Keras fits on tiny data: what a user notices is the per-epoch BLEU in the history and
which epoch's weights the trained model ends up with.
"""

from __future__ import annotations


import numpy as np
import pytest
import tensorflow as tf

from models import text
from configs import ConfigError, load_config
from models.epoch_bleu import EpochBleu, references_by_image
from configs.config import TrainerSections
from tests.runs import trainer_sections
from models.trainer import build_model, fit_callbacks

WORDS = ["a", "dog", "cat", "runs", "sits", "on", "grass", "sofa"]
VOCAB = [text.PAD, text.START, text.END, *WORDS, text.UNK]
CLASSES = [["a", "dog", "runs", "on", "grass"], ["a", "cat", "sits", "on", "sofa"]]
LENGTH, CELLS, CHANNELS = 8, 4, 6


def config(**changes) -> TrainerSections:
    return trainer_sections(embedding_dim=16, hidden_dim=32, attention_dim=8, dropout=0.0, max_length=LENGTH, **changes)


def caption_ids(words: list[str]) -> np.ndarray:
    ids = [VOCAB.index(text.START), *(VOCAB.index(w) for w in words), VOCAB.index(text.END)]
    return np.array(ids + [0] * (LENGTH - len(ids)))


def images(seed: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Grids whose first channel says the class (dog or cat), the rest noise; and the classes."""
    rng = np.random.default_rng(seed)
    classes = rng.integers(0, 2, size=count)
    grids = rng.normal(size=(count, CELLS, CHANNELS)).astype("float32")
    grids[:, :, 0] = np.where(classes[:, None] == 0, 3.0, -3.0)
    return grids, classes


def batches(grids: np.ndarray, classes: np.ndarray) -> tf.data.Dataset:
    tokens = np.stack([caption_ids(CLASSES[c]) for c in classes])
    inputs = {"image_grid": grids, "tokens": tokens[:, :-1]}
    mask = (tokens[:, 1:] != 0).astype("float32")
    return tf.data.Dataset.from_tensor_slices((inputs, tokens[:, 1:], mask)).batch(8)


def test_epoch_bleu_scores_the_eval_images_every_epoch_and_sees_the_model_learn():
    cfg = config(learning_rate=0.003, select_by="bleu_4", early_stopping_patience=10)
    train_grids, train_classes = images(0, 64)
    eval_grids, eval_classes = images(1, 12)
    eval_captions = np.stack([caption_ids(CLASSES[c]) for c in eval_classes])
    references = references_by_image(np.arange(len(eval_classes)), eval_captions, VOCAB)
    assert references["0"] == [" ".join(CLASSES[eval_classes[0]])]
    epoch_bleu = EpochBleu({"image_grid": eval_grids}, references, VOCAB, LENGTH, batch_size=5)

    tf.keras.utils.set_random_seed(cfg.train.seed)
    model = build_model(len(VOCAB), cfg)
    history = model.fit(
        batches(train_grids, train_classes),
        validation_data=batches(eval_grids, eval_classes),
        epochs=6,
        callbacks=fit_callbacks(cfg, epoch_bleu),
        verbose=0,
    ).history

    for n in (1, 2, 3, 4):
        assert len(history[f"val_bleu_{n}"]) == 6
    # Untrained, the captions are noise; trained, every eval image gets its class's caption.
    assert history["val_bleu_4"][0] < 0.5
    assert max(history["val_bleu_4"]) == pytest.approx(1.0)
    captions = epoch_bleu.captions()
    assert captions == {str(i): " ".join(CLASSES[c]) for i, c in enumerate(eval_classes)}


class ScriptedScores(tf.keras.callbacks.Callback):
    """Stands in for EpochBleu's scores (a fixed script) and remembers each epoch's weights."""

    def __init__(self, bleu_4: list[float]) -> None:
        super().__init__()
        self.bleu_4 = bleu_4
        self.weights: list[list[np.ndarray]] = []

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs["val_bleu_4"] = self.bleu_4[epoch]
        self.weights.append([w.copy() for w in self.model.get_weights()])


def test_early_stopping_keeps_the_epoch_with_the_best_bleu_not_the_lowest_eval_loss():
    cfg = config(learning_rate=0.01, select_by="bleu_4", early_stopping_patience=2)
    grids, classes = images(0, 32)
    scores = ScriptedScores([0.10, 0.30, 0.20, 0.25, 0.90, 0.95])
    tf.keras.utils.set_random_seed(cfg.train.seed)
    model = build_model(len(VOCAB), cfg)
    history = model.fit(
        batches(grids, classes), validation_data=batches(grids, classes), epochs=6,
        callbacks=fit_callbacks(cfg, scores), verbose=0,
    ).history
    # Eval captions are the training captions: eval loss falls every epoch, BLEU peaks at 2.
    assert np.all(np.diff(history["val_loss"]) < 0)
    assert history["val_bleu_4"] == [0.10, 0.30, 0.20, 0.25]  # stopped 2 epochs after the best
    for kept, best in zip(model.get_weights(), scores.weights[1]):
        np.testing.assert_array_equal(kept, best)


def test_select_by_is_checked_and_needs_the_bleu_callback():
    with pytest.raises(ConfigError, match="train.select_by"):
        load_config("smoke", overrides={"train.select_by": "bleu"})
    with pytest.raises(ValueError, match="EpochBleu"):
        fit_callbacks(config(select_by="bleu_1"))
    assert load_config("smoke", overrides={"train.select_by": "bleu_1"}).train.select_by == "bleu_1"

"""Self-critical sequence training (scst.*): the second stage trains on the model's own
samples with their CIDEr-D as the reward.

Real Keras models on tiny synthetic data whose grids say the class (dog or cat): what a
user notices is the reward rising over the epochs, better captions on held-out images, and
that the stage keeps its best epoch.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from configs.config import ConfigError, ScstConfig
from models import scst, text
from models.decoding import sample_decode
from models.epoch_bleu import EpochBleu, references_by_image
from models.export import image_input
from models.finetune import CaptionerOnMaps
from models.trainer import build_model, join_stages
from tests.runs import trainer_sections
from tests.test_epoch_selection import CELLS, CHANNELS, VOCAB, caption_ids, images

LENGTH = 8
IDS = {"pad": 0, "start": VOCAB.index(text.START), "end": VOCAB.index(text.END)}
# Two phrasings per class, so CIDEr-D's document frequencies and references vary.
REFERENCES = [
    [["a", "dog", "runs", "on", "grass"], ["dog", "runs", "on", "grass"], ["a", "dog", "on", "grass"]],
    [["a", "cat", "sits", "on", "sofa"], ["cat", "sits", "on", "sofa"], ["a", "cat", "on", "sofa"]],
]


def scst_images(grids: np.ndarray, classes: np.ndarray, on_maps: bool = False) -> scst.ScstImages:
    rows = [(i, caption_ids(ref)) for i, c in enumerate(classes) for ref in REFERENCES[c]]
    index = np.array([i for i, _ in rows])
    captions = np.stack([ids for _, ids in rows])
    return scst.ScstImages.of(model_inputs(grids, on_maps), index, captions)


def dev_scorer(seed: int = 1, count: int = 16, on_maps: bool = False) -> EpochBleu:
    grids, classes = images(seed, count)
    rows = [(i, caption_ids(ref)) for i, c in enumerate(classes) for ref in REFERENCES[c]]
    references = references_by_image(np.array([i for i, _ in rows]), np.stack([r for _, r in rows]), VOCAB)
    return EpochBleu(model_inputs(grids, on_maps), references, VOCAB, LENGTH, batch_size=8)


def model_inputs(grids: np.ndarray, on_maps: bool) -> dict[str, np.ndarray]:
    """The grids [N, CELLS, CHANNELS], or them as the maps [N, 2, 2, CHANNELS] a backbone's top reads."""
    return {"image_map": grids.reshape(len(grids), 2, 2, CHANNELS)} if on_maps else {"image_grid": grids}


def backbone_top(seed: int = 4) -> keras.Model:
    """A stand-in for the backbone's blocks N.. (models.finetune): map -> {"grid"}, with BatchNorm."""
    tf.keras.utils.set_random_seed(seed)
    maps = keras.Input((2, 2, CHANNELS))
    x = keras.layers.BatchNormalization(name="bn")(keras.layers.Conv2D(CHANNELS, 1, name="conv")(maps))
    return keras.Model(maps, {"grid": x})


def untrained_model(seed: int = 3):
    tf.keras.utils.set_random_seed(seed)
    cfg = trainer_sections(embedding_dim=16, hidden_dim=32, attention_dim=8, dropout=0.0, max_length=LENGTH)
    model = build_model(len(VOCAB), cfg)
    model({"image_grid": tf.zeros([1, CELLS, CHANNELS]), "tokens": tf.zeros([1, LENGTH - 1], tf.int64)})
    return model


def test_the_baseline_is_the_mean_of_the_images_other_samples():
    np.testing.assert_allclose(scst.advantages(np.array([[1.0, 2.0, 3.0], [4.0, 4.0, 4.0]])), [[-1.5, 0, 1.5], [0, 0, 0]])
    with pytest.raises(ValueError, match="at least 2 samples"):
        scst.advantages(np.ones((2, 1)))


def test_references_drop_start_and_padding_and_keep_end():
    data = scst_images(*images(0, 2))
    end = IDS["end"]
    assert all(ref[-1] == end and IDS["start"] not in ref and 0 not in ref for refs in data.references for ref in refs)
    assert [len(refs) for refs in data.references] == [3, 3]


def test_samples_follow_the_seed_end_with_padding_and_never_contain_pad_or_start():
    model = untrained_model()
    grids = tf.constant(images(0, 4)[0])
    sample = lambda seed: sample_decode(
        model, {"image_grid": grids}, IDS["start"], IDS["end"], 0, LENGTH, tf.constant(seed, tf.int64), samples_per_image=8
    ).numpy()
    first = sample([7, 0])
    assert first.shape == (32, LENGTH - 1)
    np.testing.assert_array_equal(first, sample([7, 0]))
    assert (first != sample([7, 1])).any()
    for row in first:
        ends = np.flatnonzero(row == IDS["end"])
        real = row[: ends[0] + 1] if len(ends) else row
        assert 0 not in real and IDS["start"] not in real
        assert (row[len(real):] == 0).all()
    # Samples, not the argmax: one image's eight draws are not all the same caption.
    assert len({tuple(r) for r in first[:8]}) > 1


@pytest.mark.parametrize("architecture", ["attention", "merge"])
def test_teacher_forcing_from_an_encoded_image_is_the_models_own_forward_pass(architecture):
    """SCST's gradient pass encodes each image once and repeats the encoding for its samples."""
    tf.keras.utils.set_random_seed(3)
    cfg = trainer_sections(embedding_dim=16, hidden_dim=32, attention_dim=8, dropout=0.0, max_length=LENGTH,
                           architecture=architecture)
    model = build_model(len(VOCAB), cfg)
    rng = np.random.default_rng(0)
    inputs = {"image_grid": tf.constant(rng.normal(size=(3, CELLS, CHANNELS)), tf.float32),
              "image_features": tf.constant(rng.normal(size=(3, CHANNELS)), tf.float32)}
    inputs = {name: inputs[name] for name in model.image_inputs}
    tokens = tf.constant(rng.integers(1, len(VOCAB), size=(6, LENGTH - 1)))
    repeated = {name: tf.repeat(t, 2, axis=0) for name, t in inputs.items()}
    expected = model({**repeated, "tokens": tokens})
    image = tf.nest.map_structure(lambda t: tf.repeat(t, 2, axis=0), model.encode_image(inputs))
    np.testing.assert_allclose(model.teacher_forced(image, tokens), expected, rtol=1e-5, atol=1e-5)


def test_self_critical_training_raises_the_reward_and_held_out_cider():
    grids, classes = images(0, 64)
    model = untrained_model()
    scorer = dev_scorer()
    before = scorer.scores(model)
    settings = ScstConfig(epochs=6, samples_per_image=4, batch_size=16, learning_rate=0.01, max_length=LENGTH)
    history, kept = scst.train_self_critical(model, scst_images(grids, classes), lambda: scorer.scores(model), settings, IDS, seed=5)

    rewards = history[scst.REWARD_KEY]
    assert len(rewards) == 6 and len(history["epoch_seconds"]) == 6
    assert rewards[-1] > rewards[0] + 0.5, rewards
    after = scorer.scores(model)
    assert after["cider_d"] > before["cider_d"] + 0.5, (before, after)
    # The kept weights are the best epoch's (CIDEr-D on the held-out images).
    assert kept >= 1
    assert after["cider_d"] == pytest.approx(max(history[scst.DEV_CIDER_KEY]))
    assert after["cider_d"] == pytest.approx(history[scst.DEV_CIDER_KEY][kept - 1])


@pytest.mark.parametrize("top_learning_rate", [0.01, None])
def test_on_maps_the_stage_trains_the_backbones_top_only_at_its_own_rate(top_learning_rate):
    grids, classes = images(0, 64)
    top, captioner = backbone_top(), untrained_model()
    model = CaptionerOnMaps(top, captioner)
    scorer = dev_scorer(on_maps=True)
    # Decoding on maps is decoding the captioner on the top's grids.
    dev_maps = scorer.images["image_map"]
    on_grids = EpochBleu({"image_grid": image_input(top(dev_maps), "image_grid").numpy()}, scorer.references, VOCAB, LENGTH)
    on_grids.scores(captioner)
    assert scorer.scores(model) and scorer.captions() == on_grids.captions()
    before = {w.path: w.numpy() for w in top.weights}
    settings = ScstConfig(epochs=4, samples_per_image=4, batch_size=16, learning_rate=0.01, max_length=LENGTH)
    history, kept = scst.train_self_critical(model, scst_images(grids, classes, on_maps=True), lambda: scorer.scores(model),
                                             settings, IDS, seed=5, top_learning_rate=top_learning_rate)

    assert history[scst.REWARD_KEY][-1] > history[scst.REWARD_KEY][0] + 0.3, history
    assert kept >= 1
    moved = {w.path: not np.array_equal(w.numpy(), before[w.path]) for w in top.weights}
    conv = [path for path in moved if "conv" in path]
    statistics = [path for path in moved if "moving" in path]
    assert conv and statistics
    assert not any(moved[p] for p in statistics)  # BatchNorm statistics frozen either way
    assert all(moved[p] for p in conv) == (top_learning_rate is not None), moved


def test_the_cross_entropy_weights_stay_when_no_epoch_beats_them():
    grids, classes = images(0, 32)
    model = untrained_model()
    scorer = dev_scorer()
    weights = model.get_weights()
    # A learning rate this small moves nothing that greedy decoding would notice.
    settings = ScstConfig(epochs=1, samples_per_image=2, batch_size=16, learning_rate=1e-9, max_length=LENGTH)
    _, kept = scst.train_self_critical(model, scst_images(grids, classes), lambda: scorer.scores(model), settings, IDS, seed=5)
    assert kept == 0
    for before, after in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(before, after)


def test_histories_of_both_stages_line_up_by_epoch():
    first = {"loss": [3.0, 2.0], "epoch_seconds": [1.0, 1.0]}
    second = {"scst_reward": [0.5], "epoch_seconds": [4.0]}
    assert join_stages(first, second, 2) == {"loss": [3.0, 2.0], "epoch_seconds": [1.0, 1.0, 4.0], "scst_reward": [None, None, 0.5]}


@pytest.mark.parametrize("change, message", [
    ({"samples_per_image": 1}, "samples_per_image"),
    ({"epochs": -1}, "scst.epochs"),
    ({"learning_rate": 0.0}, "learning_rate"),
    ({"max_length": 1}, "max_length"),
])
def test_bad_scst_settings_are_refused(change, message):
    with pytest.raises(ConfigError, match=message):
        ScstConfig(**change)


def test_sampled_captions_may_not_be_longer_than_the_training_captions():
    from configs import load_config

    with pytest.raises(ConfigError, match="scst.max_length"):
        load_config("smoke_attention", {"scst.epochs": 1, "scst.max_length": 40}, env={})

"""The backbone's top fine-tuned through the whole pipeline (features.finetune_from_block).

One smoke_attention run with block 15 on: the feature step stores the map entering the
block instead of the grid, the Trainer trains blocks 15.. and the head with the decoder
(then SCST on their grids), and the pushed model serves that trained top over the
untouched bottom of the backbone.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from models import contract
from tests import mlmd
from tests.runs import smoke_config

pytestmark = pytest.mark.e2e

BLOCK = 15
MAP_SHAPE = (7, 7, 192)  # entering EfficientNet-Lite0's block 15


@pytest.fixture(scope="module")
def finetune_run(tmp_path_factory: pytest.TempPathFactory):
    from pipelines import local_runner

    config = smoke_config(
        tmp_path_factory.mktemp("finetune_run"), profile="smoke_attention",
        **{"features.finetune_from_block": BLOCK, "train.epochs": 8},
    )
    return config, local_runner.run(config)


def _only(metadata_path: Path, type_name: str, producer: str | None = None):
    artifacts = mlmd.live_artifacts(metadata_path, type_name, producer)
    assert len(artifacts) == 1, artifacts
    return artifacts[0]


def test_the_feature_step_stores_the_map_entering_the_block_instead_of_the_grid(finetune_run):
    _, paths = finetune_run
    features = _only(paths.metadata_path, "Examples", "FeatureExtractor")
    assert features.custom_properties["map_shape"].string_value == ",".join(map(str, MAP_SHAPE))
    assert "grid_shape" not in features.custom_properties
    record = next(iter(tf.data.TFRecordDataset(sorted(str(p) for p in Path(features.uri).glob("Split-train/*")))))
    stored = tf.train.Example.FromString(record.numpy()).features.feature
    assert len(stored[contract.IMAGE_MAP_KEY].float_list.value) == np.prod(MAP_SHAPE)
    assert contract.IMAGE_GRID_KEY not in stored


def test_the_fine_tuned_model_learned_and_was_blessed_and_pushed(finetune_run):
    config, paths = finetune_run
    model_run = _only(paths.metadata_path, "ModelRun")
    history = json.loads((Path(model_run.uri) / contract.HISTORY_FILE).read_text())
    losses = [v for v in history["loss"] if v is not None]
    assert losses[-1] < 0.5 * losses[0], losses
    assert any(v is not None for v in history["scst_reward"]), "the SCST stage ran on the top's grids"
    metrics = json.loads((Path(_only(paths.metadata_path, "captioner.CaptionEvaluation").uri)
                          / contract.METRICS_FILE).read_text())
    assert metrics["bleu_4"] >= config.gate.min_bleu_4, metrics
    assert sorted(p.name for p in config.push_dir.iterdir()) == ["1"]


def test_the_served_model_carries_the_trained_top_over_the_untouched_bottom(finetune_run):
    """Against a fresh ImageNet backbone: every weight below the block is the same bit for
    bit, the top's kernels moved, and its BatchNorm statistics stayed frozen."""
    from models.backbones import get_backbone

    config, _ = finetune_run
    served = {v.name: v.numpy() for v in tf.saved_model.load(str(config.push_dir / "1")).variables}
    feature_model, _, top = get_backbone(config.features.backbone).build_split_models(BLOCK)
    in_top = {w.path for w in top.weights}
    moved, frozen_below, frozen_stats = [], [], []
    for weight in feature_model.weights:
        same = np.array_equal(served[weight.path + ":0"], weight.numpy())
        if weight.path not in in_top:
            frozen_below.append(same)
        elif "moving_" in weight.path:
            frozen_stats.append(same)
        elif weight.path.endswith("kernel"):
            moved.append(not same)
    assert frozen_below and all(frozen_below)
    assert frozen_stats and all(frozen_stats)
    assert moved and all(moved)

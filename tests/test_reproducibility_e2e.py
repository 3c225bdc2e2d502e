"""Same data and config, another Beam setup: same vocabulary, the same features up to float
noise, the same BLEU.

Runs the smoke pipeline a second time with the DirectRunner in multi-processing mode (two
workers), which also shows that mode runs the whole pipeline, and compares with the
session's in-memory smoke run.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tests import mlmd
from tests.runs import smoke_config

pytestmark = pytest.mark.e2e

# Training is seeded and its data order fixed, so BLEU matches to float noise in practice;
# this is the tolerance the README states.
BLEU_TOLERANCE = 0.02
# Float32 noise of batch-dependent CPU kernels on features of magnitude ~1-10.
FEATURE_TOLERANCE = 1e-4


def _features(metadata_path: Path) -> dict[bytes, np.ndarray]:
    uri = mlmd.live_artifacts(metadata_path, "Examples", "FeatureExtractor")[0].uri
    features = {}
    for path in sorted(Path(uri).glob("Split-*/*")):  # uncompressed; gzipped before #17
        for record in tf.data.TFRecordDataset(str(path), compression_type="GZIP" if path.suffix == ".gz" else ""):
            feature = tf.train.Example.FromString(record.numpy()).features.feature
            features[feature["image_id"].bytes_list.value[0]] = np.array(feature["image/features"].float_list.value)
    return features


def _vocabulary(metadata_path: Path) -> str:
    uri = mlmd.live_artifacts(metadata_path, "TransformGraph")[0].uri
    return (Path(uri) / "transform_fn" / "assets" / "caption_vocab").read_text()


def _bleu(metadata_path: Path) -> dict:
    uri = mlmd.live_artifacts(metadata_path, "captioner.CaptionEvaluation")[0].uri
    return json.loads((Path(uri) / "metrics.json").read_text())


@pytest.fixture(scope="module")
def multi_worker_run(tmp_path_factory: pytest.TempPathFactory):
    from pipelines import local_runner

    config = smoke_config(
        tmp_path_factory.mktemp("multi_worker"),
        **{"beam.direct_running_mode": "multi_processing", "beam.direct_num_workers": 2},
    )
    return local_runner.run(config)


def test_two_runs_share_vocabulary_features_and_bleu(smoke_run, multi_worker_run):
    assert _vocabulary(multi_worker_run.metadata_path) == _vocabulary(smoke_run.metadata_path)

    ours, theirs = _features(multi_worker_run.metadata_path), _features(smoke_run.metadata_path)
    assert ours.keys() == theirs.keys()
    # Two workers batch the images differently, and CPU convolution kernels give results
    # that depend on the batch at the last bits of float32 (up to about 2e-6 seen here):
    # the same image must give the same features up to that noise, never more.
    worst = max(float(np.max(np.abs(ours[k] - theirs[k]))) for k in ours)
    assert worst <= FEATURE_TOLERANCE, worst

    a, b = _bleu(multi_worker_run.metadata_path), _bleu(smoke_run.metadata_path)
    for name in ("bleu_1", "bleu_4"):
        assert abs(a[name] - b[name]) <= BLEU_TOLERANCE, (name, a[name], b[name])

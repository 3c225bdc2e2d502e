"""End to end: BleuEvaluator blesses the trained smoke model, CaptionPusher serves it; a bad model is stopped.

The good run is the session's shared `smoke_run`. The bad run (`train.max_steps=1`) starts
from a copy of that run's ML Metadata in its own output root: TFX's cache then reuses every
step up to Transform (their artifacts stay where the smoke run wrote them), so only the
Trainer, the resolver, BleuEvaluator and CaptionPusher run again, and the smoke model is the
blessed baseline the bad one is compared with.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from components.caption_pusher import push
from data import layout
from tests import mlmd
from tests.runs import smoke_config

pytestmark = pytest.mark.e2e


def prop(artifact, key):
    value = artifact.custom_properties[key]
    return getattr(value, value.WhichOneof("value"))


def newest(metadata_path: Path, type_name: str):
    artifacts = mlmd.live_artifacts(metadata_path, type_name)
    assert artifacts, f"no {type_name} in {metadata_path}"
    return artifacts[-1]


def dev_ids(config) -> set[str]:
    return {r.image_id for r in layout.scan_layout(config.data_dir, [config.data.eval_split]).records[config.data.eval_split]}


def test_smoke_model_is_blessed_with_bleu_above_the_minimum(smoke_run):
    model = newest(smoke_run.metadata_path, "Model")
    blessing = newest(smoke_run.metadata_path, "ModelBlessing")
    assert prop(blessing, "blessed") == 1
    assert prop(blessing, "current_model_id") == model.id
    assert prop(blessing, "current_model") == model.uri
    assert (Path(blessing.uri) / "BLESSED").is_file()
    assert prop(blessing, "reason").startswith("blessed: bleu_4 ")

    evaluation = Path(newest(smoke_run.metadata_path, "captioner.CaptionEvaluation").uri)
    metrics = json.loads((evaluation / "metrics.json").read_text())
    gate = smoke_run.config.gate
    assert metrics["bleu_4"] >= gate.min_bleu_4 and metrics["bleu_1"] >= gate.min_bleu_1
    assert metrics["signature"] == "serving_default" and metrics["blessed"] is True
    assert metrics["images_per_second"] > 0 and metrics["seconds"] > 0
    if metrics["meteor"] is None:  # no WordNet data on this machine
        assert "METEOR was skipped" in metrics["meteor_skipped_reason"]
    else:
        assert 0.0 < metrics["meteor"] <= 1.0

    lines = (evaluation / "predictions.jsonl").read_text().splitlines()
    predictions = [json.loads(line) for line in lines]
    assert len(predictions) == metrics["num_images"] == len(dev_ids(smoke_run.config))
    assert {p["image_id"] for p in predictions} == dev_ids(smoke_run.config)
    assert all(p["caption"].strip() and len(p["references"]) == 5 for p in predictions)


def test_smoke_model_is_pushed_as_version_1(smoke_run):
    base = smoke_run.config.push_dir
    assert base.is_relative_to(smoke_run.config.output_root)  # tests never touch the repo's serving dir
    assert push.versions(base) == [1]
    assert sorted(p.name for p in base.iterdir()) == ["1"]  # no temporary directory left
    model = newest(smoke_run.metadata_path, "Model")
    assert push.model_fingerprint(base / "1") == push.model_fingerprint(Path(model.uri) / "Format-Serving")
    assert push.read_source(base / "1")["model_id"] == model.id

    pushed = newest(smoke_run.metadata_path, "PushedModel")
    assert prop(pushed, "pushed") == 1
    assert prop(pushed, "pushed_version") == 1
    assert prop(pushed, "pushed_destination") == str(base / "1")


@pytest.fixture(scope="module")
def bad_run(smoke_run, tmp_path_factory):
    from pipelines import local_runner

    root = tmp_path_factory.mktemp("bad_model")
    shutil.copy(smoke_run.metadata_path, root / "metadata.db")
    config = smoke_config(root, **{"train.max_steps": 1, "data.data_dir": str(smoke_run.config.data_dir)})
    paths = local_runner.run(config)
    return config, paths.metadata_path


def test_a_one_step_model_is_not_blessed_and_the_reason_says_why(smoke_run, bad_run):
    config, metadata_path = bad_run
    model = newest(metadata_path, "Model")
    assert model.id != newest(smoke_run.metadata_path, "Model").id  # the Trainer did run again
    blessing = newest(metadata_path, "ModelBlessing")
    assert prop(blessing, "blessed") == 0
    assert prop(blessing, "current_model_id") == model.id
    assert (Path(blessing.uri) / "NOT_BLESSED").is_file()
    assert not (Path(blessing.uri) / "BLESSED").exists()
    reason = prop(blessing, "reason")
    assert "< min_bleu_4 0.5000 (short by " in reason, reason
    # The smoke model, blessed before, is the baseline the bad model fell behind.
    assert prop(blessing, "baseline_model_id") == newest(smoke_run.metadata_path, "Model").id
    assert "below the blessed baseline" in reason, reason


def test_a_one_step_model_is_not_pushed(smoke_run, bad_run):
    config, metadata_path = bad_run
    pushed = newest(metadata_path, "PushedModel")
    assert prop(pushed, "pushed") == 0
    assert "min_bleu_4" in prop(pushed, "reason")
    assert push.versions(config.push_dir) == []
    assert push.versions(smoke_run.config.push_dir) == [1]

"""The lines a finished run ends with (tracking/run_summary.py), from a RunRecord as ML
Metadata would give it: what a user reads to know what happened and what to type next."""

from __future__ import annotations

from pathlib import Path

from tracking.run_record import ArtifactInfo, RunRecord
from tracking.run_summary import summary_lines


def _artifact(type_name: str, producer: str, **properties) -> ArtifactInfo:
    return ArtifactInfo(id=1, type_name=type_name, uri=Path("/tmp/x"), producer=producer, properties=properties)


def _record(blessed: bool, reason: str, pushed: bool, **evaluation) -> RunRecord:
    push_props = {"pushed": int(pushed), "pushed_version": 3} if pushed else {"pushed": 0, "reason": "the model was not blessed"}
    return RunRecord(
        pipeline_name="captioner-smoke",
        executions={"Flickr8kExampleGen": "CACHED", "Trainer": "COMPLETE"},
        evaluation=_artifact("ModelEvaluation", "BleuEvaluator", num_images=36, **evaluation),
        blessing=_artifact("ModelBlessing", "BleuEvaluator", blessed=int(blessed), reason=reason),
        pushed_model=_artifact("PushedModel", "CaptionPusher", **push_props),
    )


def test_a_blessed_pushed_run_names_scores_reason_version_and_next_commands(tmp_path):
    record = _record(True, "blessed: bleu_4 0.8968 >= min_bleu_4 0.5000", True, bleu_1=0.95941, bleu_4=0.89683, cider=3.87)
    lines = summary_lines(record, tmp_path / "serving" / "captioner", "make mlflow-ui PROFILE=smoke", repo_root=tmp_path)
    assert lines[0] == "scores on 36 images: BLEU-1 0.9594, BLEU-4 0.8968, CIDEr-D 3.8700"
    assert lines[1] == "gate: blessed: bleu_4 0.8968 >= min_bleu_4 0.5000"
    assert lines[2] == f"pushed: version 3 under {tmp_path / 'serving' / 'captioner'}"
    assert lines[3] == "reused from the TFX cache: Flickr8kExampleGen"
    commands = [line.split("#")[0].strip() for line in lines[lines.index("next:") + 1:]]
    assert commands[0].startswith(".venv/bin/python -m serving.local_server --model-base ")
    assert commands[1:] == [".venv/bin/caption photo.jpg", "make mlflow-ui PROFILE=smoke"]


def test_the_default_push_base_is_served_by_make_serve_local(tmp_path):
    record = _record(True, "blessed", True, bleu_4=0.5)
    lines = summary_lines(record, tmp_path / "serving/models/captioner", "ui", repo_root=tmp_path)
    assert lines[lines.index("next:") + 1].split("#")[0].strip() == "make serve-local"


def test_a_rejected_run_says_why_it_was_not_blessed_nor_pushed(tmp_path):
    record = _record(False, "bleu_4 0.1000 < min_bleu_4 0.5000", False, bleu_4=0.1)
    lines = summary_lines(record, tmp_path, "ui", repo_root=tmp_path)
    assert "gate: not blessed (bleu_4 0.1000 < min_bleu_4 0.5000)" in lines
    assert "not pushed: the model was not blessed" in lines
    assert not any(line.startswith("pushed:") for line in lines)

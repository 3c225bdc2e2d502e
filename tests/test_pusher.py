"""CaptionPusher: atomic, monotonic, de-duplicated pushes into TF Serving's layout (no TFX run)."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from components.caption_pusher import push


def fake_model(root: Path, content: str) -> Path:
    """A directory shaped like a SavedModel export; `content` makes it unique."""
    root.mkdir(parents=True)
    (root / "saved_model.pb").write_bytes(b"graph " + content.encode())
    (root / "variables").mkdir()
    (root / "variables" / "variables.index").write_bytes(b"index " + content.encode())
    (root / "variables" / "variables.data-00000-of-00001").write_bytes(os.urandom(64) if content == "random" else content.encode() * 100)
    (root / "assets").mkdir()
    (root / "fingerprint.pb").write_bytes(b"fp")
    return root


def entries(base: Path) -> list[str]:
    return sorted(p.name for p in base.iterdir())


def test_first_push_is_version_1_with_the_files_and_a_push_record(tmp_path):
    model = fake_model(tmp_path / "model", "a")
    base = tmp_path / "serving" / "captioner"
    result = push.push_model(model, base, source={"model_id": 7})
    assert (result.version, result.path, result.copied) == (1, base / "1", True)
    assert entries(base) == ["1"]  # no temporary directory left behind
    assert (base / "1" / "saved_model.pb").read_bytes() == b"graph a"
    assert (base / "1" / "variables" / "variables.index").read_bytes() == b"index a"
    record = push.read_source(base / "1")
    assert record["model_id"] == 7 and record["fingerprint"] == push.model_fingerprint(model)
    assert push.model_fingerprint(base / "1") == push.model_fingerprint(model)


def test_versions_grow_from_the_largest_numeric_directory(tmp_path):
    base = tmp_path / "base"
    for name in ("7", "10", "abc", ".tmp-3-xyz"):
        (base / name).mkdir(parents=True)
    (base / "12").write_text("a file, not a version")
    result = push.push_model(fake_model(tmp_path / "m", "a"), base)
    assert result.version == 11
    assert push.versions(base) == [7, 10, 11]


def test_the_same_model_again_is_not_a_new_version(tmp_path):
    base = tmp_path / "base"
    a = fake_model(tmp_path / "a", "a")
    a_again = fake_model(tmp_path / "a_again", "a")  # another Trainer output, same bytes
    b = fake_model(tmp_path / "b", "b")
    assert push.push_model(a, base).version == 1
    again = push.push_model(a_again, base)
    assert (again.version, again.copied) == (1, False)
    assert push.push_model(b, base).version == 2
    # An older model pushed again on purpose becomes the newest version (TF Serving serves the largest).
    assert push.push_model(a, base).version == 3
    assert push.versions(base) == [1, 2, 3]


def test_fingerprint_covers_weights_but_not_assets_extra(tmp_path):
    model = fake_model(tmp_path / "m", "a")
    before = push.model_fingerprint(model)
    (model / "assets.extra").mkdir()
    (model / "assets.extra" / "tf_serving_warmup_requests").write_bytes(b"warmup")
    assert push.model_fingerprint(model) == before
    (model / "variables" / "variables.data-00000-of-00001").write_bytes(b"other weights")
    assert push.model_fingerprint(model) != before


def test_not_a_savedmodel_is_refused_and_nothing_is_written(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="saved_model.pb"):
        push.push_model(tmp_path / "empty", tmp_path / "base")
    assert not (tmp_path / "base").exists() or entries(tmp_path / "base") == []


def test_a_failure_mid_copy_leaves_no_version_and_no_temporary_directory(tmp_path, monkeypatch):
    model = fake_model(tmp_path / "m", "a")
    base = tmp_path / "base"
    copied = []

    def copy_then_fail(src, dst):
        if len(copied) == 2:
            raise OSError(28, "No space left on device")
        copied.append(src)
        return push.shutil.copy2(src, dst)

    monkeypatch.setattr(push, "_copy_file", copy_then_fail)
    with pytest.raises(OSError, match="No space left"):
        push.push_model(model, base)
    assert len(copied) == 2  # it did fail half-way
    assert entries(base) == []
    monkeypatch.undo()
    assert push.push_model(model, base).version == 1


def test_losing_the_race_for_a_version_takes_the_next_one_and_never_overwrites(tmp_path, monkeypatch):
    base = tmp_path / "base"
    push.push_model(fake_model(tmp_path / "a", "a"), base)
    real_versions = push.versions
    calls = []

    def stale_then_real(directory):
        calls.append(directory)
        return [] if len(calls) == 1 else real_versions(directory)  # a view from before "1" appeared

    monkeypatch.setattr(push, "versions", stale_then_real)
    result = push.push_model(fake_model(tmp_path / "b", "b"), base)
    assert result.version == 2
    assert (base / "1" / "saved_model.pb").read_bytes() == b"graph a"
    assert entries(base) == ["1", "2"]


def test_concurrent_pushes_get_distinct_consecutive_complete_versions(tmp_path, monkeypatch):
    base = tmp_path / "base"
    models = [fake_model(tmp_path / f"m{i}", f"model {i}") for i in range(6)]

    def slow_copy(src, dst):  # widen the window in which pushers overlap
        time.sleep(0.01)
        return push.shutil.copy2(src, dst)

    monkeypatch.setattr(push, "_copy_file", slow_copy)
    start = threading.Barrier(len(models))
    results, errors = [], []

    def worker(model):
        start.wait()
        try:
            results.append(push.push_model(model, base))
        except Exception as e:  # noqa: BLE001 - reported by the assertion below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(m,)) for m in models]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(r.version for r in results) == list(range(1, len(models) + 1))
    assert entries(base) == sorted(str(v) for v in range(1, len(models) + 1))
    for result in results:
        assert push.model_fingerprint(result.path) == result.fingerprint  # complete, not mixed
    assert len({r.fingerprint for r in results}) == len(models)


def test_stale_temporary_directories_are_cleaned_fresh_ones_kept(tmp_path):
    base = tmp_path / "base"
    stale, fresh = base / ".tmp-4-old", base / ".tmp-5-new"
    stale.mkdir(parents=True)
    fresh.mkdir()
    old = time.time() - push.STALE_TMP_SECONDS - 60
    os.utime(stale, (old, old))
    push.push_model(fake_model(tmp_path / "m", "a"), base)
    assert entries(base) == [".tmp-5-new", "1"]


# The TFX executor, called directly with artifacts that were never in a pipeline.


def run_executor(tmp_path: Path, blessed: int, blessed_model_id: int = 1):
    from tfx.types import standard_artifacts

    from components.caption_pusher.executor import Executor

    model = standard_artifacts.Model()
    model.uri = str(tmp_path / "model")
    model.id = 1
    fake_model(tmp_path / "model" / "Format-Serving", "a")
    training = tmp_path / "model" / "Format-Serving" / "assets.extra" / "training.json"  # as the Trainer writes it
    training.parent.mkdir(parents=True, exist_ok=True)
    training.write_text(json.dumps({"vocabulary_size": 2529, "epochs_trained": 6, "pipeline_run_id": "2026-12-04T17:54:45.9",
                                    "mlflow_run_id": "0518acb2ff144934950db18c07deb3b0"}))
    blessing = standard_artifacts.ModelBlessing()
    blessing.uri = str(tmp_path / "blessing")
    blessing.set_int_custom_property("blessed", blessed)
    blessing.set_int_custom_property("current_model_id", blessed_model_id)
    blessing.set_string_custom_property("reason", "not blessed: bleu_4 0.10 < min_bleu_4 0.50 (short by 0.40)")
    blessing.set_float_custom_property("bleu_4", 0.2125)  # as BleuEvaluator leaves the scores
    blessing.set_float_custom_property("cider", 0.5531)
    pushed = standard_artifacts.PushedModel()
    pushed.uri = str(tmp_path / "pushed")
    base = tmp_path / "serving"
    facts = {"profile": "flickr8k_lite0", "dataset": "flickr8k", "backbone": "efficientnet_lite0", "decoder": "attention"}
    Executor().Do(
        {"model": [model], "model_blessing": [blessing]},
        {"pushed_model": [pushed]},
        {"base_dir": str(base), "card_facts": json.dumps(facts)},
    )
    return pushed, base


def test_executor_pushes_a_blessed_model_and_records_version_and_destination(tmp_path):
    pushed, base = run_executor(tmp_path, blessed=1)
    assert pushed.get_int_custom_property("pushed") == 1
    assert pushed.get_int_custom_property("pushed_version") == 1
    assert pushed.get_string_custom_property("pushed_destination") == str(base / "1")
    assert json.loads((Path(pushed.uri) / "push.json").read_text())["version"] == 1
    assert push.versions(base) == [1]


def test_executor_puts_the_model_card_in_the_pushed_version_where_tf_serving_ignores_it(tmp_path):
    _, base = run_executor(tmp_path, blessed=1)
    card = json.loads((base / "1" / "assets.extra" / "captioner_push.json").read_text())["card"]
    assert card["summary"] == "EfficientNet-Lite0 + attention LSTM, trained on Flickr8k, BLEU-4 0.212, CIDEr-D 0.553 (dev split)"
    assert card["scores"] == {"bleu_4": 0.2125, "cider": 0.5531} and card["model_id"] == 1
    assert card["profile"] == "flickr8k_lite0" and "warning" not in card  # real data: no synthetic banner
    assert (card["vocabulary_size"], card["epochs_trained"]) == (2529, 6)  # the Trainer's facts travel along
    assert card["pipeline_run_id"] == "2026-12-04T17:54:45.9" and card["mlflow_run_id"] == "0518acb2ff144934950db18c07deb3b0"


def test_executor_does_not_push_an_unblessed_model(tmp_path):
    pushed, base = run_executor(tmp_path, blessed=0)
    assert pushed.get_int_custom_property("pushed") == 0
    assert "min_bleu_4" in pushed.get_string_custom_property("reason")
    assert not base.exists()


def test_executor_refuses_a_blessing_of_another_model(tmp_path):
    pushed, base = run_executor(tmp_path, blessed=1, blessed_model_id=2)
    assert pushed.get_int_custom_property("pushed") == 0
    assert "model id 2" in pushed.get_string_custom_property("reason")
    assert not base.exists()

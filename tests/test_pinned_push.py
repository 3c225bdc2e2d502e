"""Pushing next to version directories that exist but are empty (caption_pusher/push.py).

rename(2) silently replaces an empty directory, so an empty `<version>/` made by someone
else (a half-started copy by hand, another pusher's mkdir) must never be pushed onto.
"""

from __future__ import annotations

import json
from pathlib import Path

from components.caption_pusher import push


def fake_model(root: Path, content: str) -> Path:
    root.mkdir(parents=True)
    (root / "saved_model.pb").write_bytes(b"graph " + content.encode())
    (root / "variables").mkdir()
    (root / "variables" / "variables.index").write_bytes(content.encode())
    return root


def test_an_empty_version_directory_that_appears_during_the_copy_is_not_replaced(tmp_path, monkeypatch):
    base = tmp_path / "base"
    assert push.push_model(fake_model(tmp_path / "a", "a"), base).version == 1
    real_copy = push._copy_file

    def copy_while_someone_makes_2(src, dst):
        (base / "2").mkdir(exist_ok=True)
        return real_copy(src, dst)

    monkeypatch.setattr(push, "_copy_file", copy_while_someone_makes_2)
    result = push.push_model(fake_model(tmp_path / "b", "b"), base)
    assert (result.version, result.path, result.copied) == (3, base / "3", True)
    assert list((base / "2").iterdir()) == []
    assert (base / "3" / "saved_model.pb").read_bytes() == b"graph b"
    assert sorted(p.name for p in base.iterdir()) == ["1", "2", "3"]


def test_an_empty_version_directory_already_there_counts_as_taken(tmp_path):
    base = tmp_path / "base"
    (base / "1").mkdir(parents=True)
    result = push.push_model(fake_model(tmp_path / "a", "a"), base)
    assert result.version == 2
    assert list((base / "1").iterdir()) == []
    assert push.versions(base) == [1, 2]


def test_the_push_record_holds_the_fingerprint_source_and_time(tmp_path):
    base = tmp_path / "base"
    model = fake_model(tmp_path / "a", "a")
    result = push.push_model(model, base, source={"model_id": 3})
    record = json.loads((base / "1" / push.SOURCE_FILE).read_text())
    assert record["source_dir"] == str(model) and record["model_id"] == 3
    assert record["fingerprint"] == result.fingerprint == push.model_fingerprint(model)
    assert isinstance(record["pushed_at"], float)
    assert push.read_source(base / "nowhere") is None


def test_a_latest_version_pushed_by_something_else_is_not_taken_for_this_model(tmp_path):
    base = tmp_path / "base"
    model = fake_model(tmp_path / "a", "a")
    other = base / "4"
    other.mkdir(parents=True)
    (other / "saved_model.pb").write_bytes(b"graph a")
    (other / "variables").mkdir()
    (other / "variables" / "variables.index").write_bytes(b"a")
    assert push.model_fingerprint(other) == push.model_fingerprint(model)  # same bytes, no push record
    assert push.push_model(model, base).version == 5


def test_stale_cleanup_removes_only_temporary_directories_never_old_versions(tmp_path):
    import os
    import time

    base = tmp_path / "base"
    assert push.push_model(fake_model(tmp_path / "a", "a"), base).version == 1
    stale_tmp = base / ".tmp-2-killed"
    stale_tmp.mkdir()
    old = time.time() - push.STALE_TMP_SECONDS - 60
    for path in (base / "1", stale_tmp):
        os.utime(path, (old, old))
    assert push.push_model(fake_model(tmp_path / "b", "b"), base).version == 2
    assert sorted(p.name for p in base.iterdir()) == ["1", "2"]
    assert (base / "1" / "saved_model.pb").read_bytes() == b"graph a"


def test_no_base_directory_means_no_versions_and_results_are_immutable(tmp_path):
    import dataclasses

    import pytest

    assert push.versions(tmp_path / "absent") == []
    result = push.push_model(fake_model(tmp_path / "a", "a"), tmp_path / "base")
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.version = 7


def test_the_push_record_lives_in_assets_extra_next_to_the_models_own_extras(tmp_path):
    model = fake_model(tmp_path / "a", "a")
    (model / "assets.extra").mkdir()
    (model / "assets.extra" / "tf_serving_warmup_requests").write_bytes(b"warmup")
    base = tmp_path / "base"
    push.push_model(model, base)
    extras = base / "1" / "assets.extra"
    assert sorted(p.name for p in extras.iterdir()) == ["captioner_push.json", "tf_serving_warmup_requests"]
    assert json.loads((extras / "captioner_push.json").read_text())["fingerprint"] == push.model_fingerprint(model)


def test_temporary_directories_are_stale_after_a_day(tmp_path):
    import os
    import time

    base = tmp_path / "base"
    older, younger = base / ".tmp-1-older", base / ".tmp-1-younger"
    older.mkdir(parents=True)
    younger.mkdir()
    now = time.time()
    os.utime(older, (now - 86_400 - 10, now - 86_400 - 10))
    os.utime(younger, (now - 86_400 + 10, now - 86_400 + 10))
    push.push_model(fake_model(tmp_path / "a", "a"), base)
    assert sorted(p.name for p in base.iterdir()) == [".tmp-1-younger", "1"]


def test_a_source_field_cannot_replace_the_fingerprint(tmp_path):
    """The duplicate check reads the fingerprint back: a caller's `source` must not overwrite it."""
    model = tmp_path / "model"
    fake_model(model, "weights")
    first = push.push_model(model, tmp_path / "serving", source={"fingerprint": "forged", "model_id": 7})
    record = push.read_source(first.path)
    assert record["fingerprint"] == first.fingerprint != "forged" and record["model_id"] == 7
    again = push.push_model(model, tmp_path / "serving")
    assert again.copied is False and again.version == first.version


def test_the_push_record_is_readable_text_one_field_a_line_ending_in_a_newline(tmp_path):
    """`cat <version>/assets.extra/captioner_push.json` and line tools (grep, diff, tail)
    show one field a line and the shell prompt on its own line after it."""
    base = tmp_path / "base"
    push.push_model(fake_model(tmp_path / "a", "a"), base, source={"model_id": 3})
    text = (base / "1" / push.SOURCE_FILE).read_text()
    record = json.loads(text)
    lines = text.splitlines()
    assert text.endswith("}\n") and lines[0] == "{" and lines[-1] == "}"
    assert len(lines) == len(record) + 2
    assert [json.loads("{" + line.strip().rstrip(",") + "}") for line in lines[1:-1]] == [{k: v} for k, v in record.items()]

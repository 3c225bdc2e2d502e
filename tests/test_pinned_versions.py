"""Pins the version policy's user-visible details (TF Serving's status JSON, labels, the
watcher thread, waiting) that the broader tests in test_serving_units leave open."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from serving.rest import RestError
from serving.versions import ModelVersions, fingerprint, is_saved_model


class Loader:
    def __init__(self, broken=()):
        self.loaded: list[int] = []
        self.broken = set(broken)

    def __call__(self, version: int, path: Path):
        if version in self.broken:
            raise ValueError("bad")
        self.loaded.append(version)
        return f"servable-{version}"


def write_version(base: Path, version: int) -> None:
    (base / str(version) / "variables").mkdir(parents=True, exist_ok=True)
    (base / str(version) / "saved_model.pb").write_bytes(b"pb")


def test_status_json_is_tf_serving_get_model_status(tmp_path):
    """The exact GetModelStatusResponse of TF Serving: state names and error codes."""
    for v in (1, 2):
        write_version(tmp_path, v)
    versions = ModelVersions("m", tmp_path, Loader(broken={2}))
    versions.scan_once()
    assert versions.status() == {"model_version_status": [
        {"version": "2", "state": "END", "status": {"error_code": "UNKNOWN", "error_message": "ValueError: bad"}},
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}},
    ]}
    assert versions.status(version=1)["model_version_status"][0]["version"] == "1"
    assert [s["version"] for s in versions.status(label="production")["model_version_status"]] == ["1"]
    with pytest.raises(RestError) as error:
        versions.status(version=5)
    assert error.value.status == 404 and "version 5" in error.value.message


def test_status_of_a_model_with_no_versions_is_404(tmp_path):
    with pytest.raises(RestError) as error:
        ModelVersions("m", tmp_path, Loader()).status()
    assert error.value.status == 404


def test_loading_state_is_named_loading_and_servable_says_so(tmp_path):
    write_version(tmp_path, 1)
    seen = {}

    def loader(version, path):
        seen["status"] = versions.status()["model_version_status"][0]["state"]
        with pytest.raises(RestError) as error:
            versions.servable()
        seen["message"] = error.value.message
        return "s"

    versions = ModelVersions("m", tmp_path, loader)
    versions.scan_once()
    assert seen["status"] == "LOADING" and "version 1 is loading" in seen["message"]


def test_nothing_pushed_says_so_and_production_is_404(tmp_path):
    versions = ModelVersions("m", tmp_path, Loader())
    versions.scan_once()
    with pytest.raises(RestError) as error:
        versions.servable()
    assert "no version has been pushed yet" in error.value.message
    with pytest.raises(RestError) as error:
        versions.label_version("production")
    assert error.value.status == 404


def test_unknown_label_lists_the_known_ones(tmp_path):
    versions = ModelVersions("m", tmp_path, Loader(), labels={"stable": 1})
    with pytest.raises(RestError) as error:
        versions.label_version("canary")
    assert "(labels: production, stable)" in error.value.message


def test_variables_and_assets_changes_change_the_fingerprint_and_pbtxt_is_a_model(tmp_path):
    (tmp_path / "variables").mkdir()
    (tmp_path / "assets").mkdir()
    before = fingerprint(tmp_path)
    (tmp_path / "variables" / "v.index").write_bytes(b"x")
    after_variables = fingerprint(tmp_path)
    (tmp_path / "assets" / "vocab.txt").write_bytes(b"x")
    assert len({before, after_variables, fingerprint(tmp_path)}) == 3
    (tmp_path / "saved_model.pbtxt").write_text("")
    assert is_saved_model(tmp_path)


def test_pinned_versions_load_newest_first(tmp_path):
    for v in (1, 2, 3):
        write_version(tmp_path, v)
    loader = Loader()
    ModelVersions("m", tmp_path, loader, labels={"a": 1, "b": 2}).scan_once()
    assert loader.loaded == [3, 2, 1]


def test_a_failed_version_does_not_take_a_slot_of_num_versions(tmp_path):
    for v in (1, 2, 3):
        write_version(tmp_path, v)
    versions = ModelVersions("m", tmp_path, Loader(broken={3}), num_versions=2)
    versions.scan_once()
    versions.scan_once()  # 3 unchanged: not retried, and still no slot
    assert versions.available_versions() == [1, 2]


def test_missing_base_warns_once_and_again_after_it_came_and_went(tmp_path, caplog):
    base = tmp_path / "base"
    versions = ModelVersions("m", base, Loader())
    with caplog.at_level(logging.WARNING, logger="serving.versions"):
        versions.scan_once()
        versions.scan_once()
        assert len(caplog.records) == 1
        base.mkdir()
        versions.scan_once()
        base.rmdir()
        versions.scan_once()
        assert len(caplog.records) == 2


def test_watcher_thread_loads_in_the_background_and_stops(tmp_path):
    write_version(tmp_path, 1)
    versions = ModelVersions("m", tmp_path, Loader(), poll_seconds=0.01)
    versions.start()
    try:
        assert versions._thread.daemon  # never keeps the server process alive
        assert versions.wait_until_available(5.0)
    finally:
        versions.stop()
    assert not versions._thread.is_alive()


def test_wait_until_available_gives_up_after_the_timeout(tmp_path):
    versions = ModelVersions("m", tmp_path, Loader())
    started = time.monotonic()
    assert versions.wait_until_available(0.2) is False
    assert 0.2 <= time.monotonic() - started < 2.0

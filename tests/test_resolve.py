"""data/resolve.py: without the dataset and without a way to download it, the run stops at
once with an error that names both ways out."""

from __future__ import annotations

import socket
import time

import pytest

from configs import load_config
from data import download
from data.resolve import DatasetMissingError, ensure_dataset


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def flickr8k_config(tmp_path, **overrides):
    return load_config("flickr8k_lite0", {"data.data_dir": str(tmp_path / "flickr8k"), **overrides}, env={})


def test_no_data_and_no_network_stops_within_seconds_naming_both_ways_out(tmp_path, monkeypatch):
    monkeypatch.setenv(download.MIRROR_ENV, f"http://127.0.0.1:{closed_port()}")
    started = time.monotonic()
    with pytest.raises(DatasetMissingError) as raised:
        ensure_dataset(flickr8k_config(tmp_path))
    assert time.monotonic() - started < 10
    message = str(raised.value)
    assert "CAPTIONER_DATA_DIR=" in message and "make demo" in message
    assert "download failed" in message and str(tmp_path / "flickr8k") in message


def test_download_off_names_both_ways_out_and_the_setting(tmp_path):
    with pytest.raises(DatasetMissingError) as raised:
        ensure_dataset(flickr8k_config(tmp_path, **{"data.download": False}))
    message = str(raised.value)
    assert "CAPTIONER_DATA_DIR=" in message and "make demo" in message and "data.download" in message

"""Tiny serving SavedModels for the serving tests, exported in seconds without training.

Used by tests/test_serving_*.py. The export goes through models/export.py exactly as the
Trainer's does (same signatures, same graph); only the parts are toys: a feature model
that averages a 16x16 image and an untrained MergeCaptioner over a seven-word vocabulary.
Its captions are gibberish, but they are the real output of the real serving graph.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

REPO = Path(__file__).resolve().parent.parent

VOCABULARY = ["", "<start>", "<end>", "a", "red", "circle", "<unk>"]
IMAGE_SIZE = 16


def export_tiny_model(
    export_dir: Path, default: str = "greedy", beam_width: int = 2, backbone: str | None = None, decoder: str = "merge"
) -> Path:
    """Writes a serving SavedModel (signatures serving_default, greedy, beam_search; with the
    attention decoder also `attention`) to export_dir.

    backbone None: the toy feature model, whose "grid" is the 16x16 image itself; a backbone
    name (e.g. "efficientnet_lite0"): that real network with random weights, for tests of the
    served graph's time and memory.
    """
    import keras
    import tensorflow as tf

    from models.attention import AttentionCaptioner
    from models.decoder import MergeCaptioner
    from models.export import DecodeSettings, export_serving_model

    keras.utils.set_random_seed(0)
    if backbone is None:
        image_size = IMAGE_SIZE
        inputs = keras.Input((image_size, image_size, 3))
        pooled = keras.layers.GlobalAveragePooling2D()(inputs)
        feature_model = keras.Model(inputs, {"pooled": pooled, "grid": inputs})
    else:
        from models.backbones import get_backbone

        network = get_backbone(backbone, weights=None)
        image_size, feature_model = network.image_size, network.build_feature_model()
    features = feature_model.output["pooled"].shape[-1]
    if decoder == "attention":
        grid = feature_model.output["grid"].shape
        captioner = AttentionCaptioner(vocab_size=len(VOCABULARY), embedding_dim=8, hidden_dim=8, dropout=0.0, attention_dim=4)
        captioner({"image_grid": tf.zeros([1, grid[1] * grid[2], grid[3]]), "tokens": tf.zeros([1, 4], tf.int32)})
        # Untrained, it would end (or pad) every caption at once: lower biases give words to point at.
        bias = captioner.logits.bias.numpy()
        bias[[0, VOCABULARY.index("<end>")]] = -100.0  # the raw pixels of the toy grid give large logits
        captioner.logits.bias.assign(bias)
    else:
        captioner = MergeCaptioner(vocab_size=len(VOCABULARY), embedding_dim=8, hidden_dim=8, dropout=0.0)
        captioner({"image_features": tf.zeros([1, features]), "tokens": tf.zeros([1, 4], tf.int32)})  # builds it
    settings = DecodeSettings(max_length=6, beam_width=beam_width, length_penalty=0.7, default=default)
    export_serving_model(feature_model, captioner, VOCABULARY, image_size, settings, export_dir)
    return Path(export_dir)


_CACHE: dict[tuple, Path] = {}


def tiny_model(cache_root: Path, default: str = "greedy", decoder: str = "merge") -> Path:
    """The tiny model for `default` and `decoder`, exported once per test session under cache_root."""
    key = (str(cache_root), default, decoder)
    if key not in _CACHE:
        _CACHE[key] = export_tiny_model(Path(cache_root) / f"tiny_model_{decoder}_{default}", default=default, decoder=decoder)
    return _CACHE[key]


def lite_model(cache_root: Path) -> Path:
    """The tiny captioner on the real EfficientNet-Lite0 network (random weights), exported once
    per test session: the served graph's size, time and memory are those of the Lite models."""
    key = (str(cache_root), "efficientnet_lite0")
    if key not in _CACHE:
        _CACHE[key] = export_tiny_model(Path(cache_root) / "lite_model", backbone="efficientnet_lite0")
    return _CACHE[key]


def push_version(model_dir: Path, base_dir: Path, version: int) -> Path:
    """Copies a SavedModel into base_dir/<version> atomically (copy aside, then rename), as the Pusher does."""
    base_dir = Path(base_dir)
    base_dir.mkdir(parents=True, exist_ok=True)
    staging = base_dir / f".staging-{version}"
    shutil.copytree(model_dir, staging)
    target = base_dir / str(version)
    staging.rename(target)
    return target


@contextlib.contextmanager
def running_server(base_dir: Path, *args: str, wait_seconds: float = 120.0) -> Iterator:
    """serving.local_server in a thread of this process on a free loopback port; yields the
    CaptionServer (its `url`, its `versions`) once a version is AVAILABLE. Extra command-line
    options go in `args`."""
    from serving import local_server as server_module

    options = server_module.parse_args(
        ["--model-base", str(base_dir), "--host", "127.0.0.1", "--port", "0", "--poll-seconds", "0.2", *args]
    )
    server = server_module.make_server(options)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        if not server.versions.wait_until_available(wait_seconds):
            raise TimeoutError(f"no version of the model under {base_dir} became AVAILABLE in {wait_seconds} s")
        yield server
    finally:
        server.shutdown()
        server.server_close()
        server.versions.stop()
        thread.join(timeout=10)


@contextlib.contextmanager
def local_server(base_dir: Path, *args: str, wait_seconds: float = 120.0) -> Iterator[str]:
    """running_server's URL."""
    with running_server(base_dir, *args, wait_seconds=wait_seconds) as server:
        yield server.url


@contextlib.contextmanager
def local_server_process(
    base_dir: Path, log_path: Path, *args: str, wait_seconds: float = 180.0, with_pid: bool = False
) -> Iterator:
    """`python -m serving.local_server` as a subprocess on a free port (--port 0, read back from
    its log); yields its URL (with its pid: (url, pid)) once a version is AVAILABLE, and stops it afterwards."""
    command = [sys.executable, "-m", "serving.local_server", "--model-base", str(base_dir),
               "--port", "0", "--poll-seconds", "0.2", *args]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    try:
        deadline = time.monotonic() + wait_seconds
        url = None
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"the server exited with {process.returncode}:\n{log_path.read_text()}")
            text = log_path.read_text(errors="replace")
            if url is None:
                found = re.search(r"on (http://127\.0\.0\.1:\d+)/v1/models/", text)
                url = found.group(1) if found else None
            if url and "AVAILABLE" in text:
                break
            time.sleep(0.2)
        else:
            raise TimeoutError(f"the server did not get a version AVAILABLE in {wait_seconds} s:\n{log_path.read_text()}")
        yield (url, process.pid) if with_pid else url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

"""What a user sees when a pipeline run goes to a pipe (CI, `| tee`): the project's own lines,
one per step, and a summary; the full log in a file. Uses the session's attention run, which
runs as `python -m pipelines.local_runner` in its own process."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

CONSOLE_LINE_LIMIT = 80  # issue 13's goal for a smoke run


def test_the_console_is_short_and_tells_the_story(attention_run):
    lines = attention_run.console.splitlines()
    print(attention_run.console)
    assert len(lines) <= CONSOLE_LINE_LIMIT, f"{len(lines)} lines"
    steps = [re.search(r"\[(\d+)/(\d+)\] (\S+): [\d.]+ s$", line) for line in lines]
    steps = [(int(m.group(1)), int(m.group(2)), m.group(3)) for m in steps if m]
    total = steps[0][1]
    assert [n for n, _, _ in steps] == list(range(1, total + 1)), "one line per step, in order"
    assert {"Flickr8kExampleGen", "FeatureExtractor", "Transform", "Trainer", "BleuEvaluator"} <= {s for *_, s in steps}
    assert any(re.search(r"epoch \d+: loss [\d.]+, val_loss", line) for line in lines)
    for noise in ("node_info", "Unable to register", "Running launcher", "BatchElements statistics",
                  "is deprecated", "View run", "View experiment"):
        assert noise not in attention_run.console, noise


def test_the_run_ends_with_scores_gate_push_and_next_commands(attention_run):
    tail = attention_run.console[attention_run.console.index(f"pipeline {attention_run.config.pipeline.name} succeeded"):]
    assert re.search(r"scores on \d+ images: BLEU-1 [\d.]+, BLEU-4 [\d.]+, CIDEr-D [\d.]+", tail)
    assert re.search(r"^gate: (blessed|not blessed): ", tail, re.M)
    assert re.search(r"^pushed: version 1 under ", tail, re.M)
    assert "serving.local_server --model-base" in tail and "caption photo.jpg" in tail
    assert f"open {attention_run.config.mlflow.tracking_uri}" in tail  # the run's MLflow UI


def test_the_full_log_file_keeps_what_the_console_hid(attention_run):
    found = re.search(r"full log: (\S+\.log)$", attention_run.console, re.M)
    assert found, "the summary names the log file"
    text = Path(found.group(1)).read_text()
    assert Path(found.group(1)).parent == attention_run.config.output_root / "logs"
    for kept in ("Component Trainer is running.", "node_info", "epoch 1: loss"):
        assert kept in text, kept

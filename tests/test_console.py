"""The console of a run (configs/console.py): what a user sees, and what the log file keeps.

Real logging, real records; no TensorFlow. The end-to-end check of a whole smoke run's
console is in tests/test_console_e2e.py (the attention run's console).
"""

from __future__ import annotations

import io
import logging
import re

import pytest
from absl import logging as absl_logging

from configs import console


class _Captured:
    def __init__(self, capsys):
        self._capsys = capsys

    def getvalue(self) -> str:
        return self._capsys.readouterr().err


@pytest.fixture
def routed(tmp_path, monkeypatch, capsys):
    """For setup_console: (what reached stderr, the log file path); restores logging after."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, absl_logging.get_verbosity())
    monkeypatch.setenv("CAPTIONER_PROGRESS", "plain")
    log_file = tmp_path / "logs" / "run.log"
    yield _Captured(capsys), log_file
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    for handler in saved[0]:
        root.addHandler(handler)
    root.setLevel(saved[1])
    absl_logging.set_verbosity(saved[2])


def test_quiet_console_shows_the_projects_lines_and_other_libraries_warnings_only(routed):
    stream, log_file = routed
    console.setup_console(log_file)
    logging.getLogger("models.trainer").info("epoch 1: loss 1.85")
    logging.getLogger("absl").info("Running launcher for node_info {")
    logging.getLogger("apache_beam.io").info("Reading from pattern")
    logging.getLogger("absl").warning("ArtifactQuery.property_predicate is not supported.")
    logging.getLogger("tensorflow").warning("something real went wrong")
    shown = stream.getvalue()
    assert re.search(r"^\d\d:\d\d:\d\d epoch 1: loss 1.85$", shown, re.M)
    assert "WARNING tensorflow: something real went wrong" in shown
    assert "node_info" not in shown and "Reading from pattern" not in shown and "property_predicate" not in shown
    kept = log_file.read_text()  # the file keeps everything the console hid
    for text in ("epoch 1: loss 1.85", "node_info", "Reading from pattern", "property_predicate", "something real"):
        assert text in kept


def test_verbose_console_shows_every_library(routed):
    stream, log_file = routed
    console.setup_console(log_file, verbose=True)
    logging.getLogger("absl").info("Running launcher for node_info {")
    assert "INFO absl: Running launcher for node_info" in stream.getvalue()


def test_step_lines_give_one_line_per_finished_step_with_its_time(routed, monkeypatch):
    stream, log_file = routed
    console.setup_console(log_file)
    clock = iter([100.0, 112.5, 113.0, 113.5])
    monkeypatch.setattr(console.time, "monotonic", lambda: next(clock))
    steps = console.StepLines(2, logging.getLogger("pipelines.steps"))
    logging.getLogger().addHandler(steps)
    try:
        absl = logging.getLogger("absl")
        absl.info("Component %s is running.", "Trainer")
        absl.info("Component %s is finished.", "Trainer")
        absl.info("Component %s is running.", "Pusher")
        absl.info("Component %s is finished.", "Pusher")
    finally:
        logging.getLogger().removeHandler(steps)
    assert steps.steps == [("Trainer", 12.5), ("Pusher", 0.5)]
    lines = [line.split(" ", 1)[1] for line in stream.getvalue().splitlines()]
    assert lines == ["[1/2] Trainer: 12.5 s", "[2/2] Pusher: 0.5 s"]


def test_step_lines_survive_a_savedmodel_export_resetting_absl_verbosity(routed):
    """TensorFlow's SavedModel export silences absl and then restores absl's verbosity flag;
    the steps after the Trainer (Transform on) must still get their lines."""
    stream, log_file = routed
    console.setup_console(log_file)
    steps = console.StepLines(1, logging.getLogger("pipelines.steps"))
    logging.getLogger().addHandler(steps)
    try:
        saved = absl_logging.get_verbosity()  # what tensorflow/python/trackable/autotrackable.py does
        absl_logging.set_verbosity(absl_logging.FATAL)
        absl_logging.set_verbosity(saved)
        absl_logging.info("Component %s is running.", "Trainer")
        absl_logging.info("Component %s is finished.", "Trainer")
    finally:
        logging.getLogger().removeHandler(steps)
    assert [node for node, _ in steps.steps] == ["Trainer"]
    assert re.search(r"\[1/1\] Trainer: [\d.]+ s$", stream.getvalue(), re.M)


def test_plain_progress_logs_rate_and_time_left_at_most_every_interval(monkeypatch, caplog):
    """The rate counts from the first batch: its start-up (tracing, loading) would make the
    first estimates of time left far too long."""
    monkeypatch.setenv("CAPTIONER_PROGRESS", "plain")
    now = [0.0]
    monkeypatch.setattr(console.time, "monotonic", lambda: now[0])
    caplog.set_level(logging.INFO)
    progress = console.Progress("features [train]", 1000, "images", logging.getLogger("components.x"), interval=30)
    for _ in range(10):  # 100 images in 10 s: no line yet
        now[0] += 1
        progress.update(10)
    assert caplog.messages == []
    now[0] += 30  # 40 s, 200 images; since the first batch (1 s, 10): 190 in 39 s, 800 left
    progress.update(100)
    rate = 190 / 39
    assert caplog.messages == [f"features [train]: 200/1000 images (20%), {rate:.1f} images/s, about {800 / rate:.0f} s left"]
    progress.update(800)  # done: the caller logs the total, not the progress
    progress.close()
    assert len(caplog.messages) == 1


def test_bars_are_off_under_ci_and_on_pipes(monkeypatch):
    monkeypatch.delenv("CAPTIONER_PROGRESS", raising=False)
    monkeypatch.setenv("CI", "true")
    assert console.bars_enabled() is False
    monkeypatch.delenv("CI")
    monkeypatch.setattr("sys.stderr", io.StringIO())  # not a terminal
    assert console.bars_enabled() is False

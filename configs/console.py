"""The console of a long run: the project's own lines on screen, everything in a log file.

Called by the runners (`pipelines/local_runner.py`, the sweep) before anything heavy is
imported. By default the console shows the project's loggers at INFO and every other
library (TFX, absl, Beam, TensorFlow, MLflow) at WARNING only, minus a few warnings known
to be harmless; `verbose=True` shows everything at INFO. The log file always gets
everything at INFO, so nothing a quiet console hides is lost.

`Progress` is the progress of one long loop (feature extraction, an epoch's batches,
evaluation): a tqdm bar with rate and ETA when stderr is a terminal, plain log lines at
most every `interval` seconds elsewhere (CI, a pipe, a file), so a log stays short.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from pathlib import Path

from absl import logging as absl_logging

# Top-level packages whose loggers are this project's.
PROJECT_PACKAGES = frozenset({"bench", "components", "configs", "data", "models", "pipelines", "serving", "tools", "tracking"})
# Third-party warnings that say nothing about the run (kept in the log file).
HARMLESS_WARNINGS = (
    re.compile(r"ArtifactQuery\.property_predicate is not supported"),
    re.compile(r"Tables initialized inside a tf\.function"),
    re.compile(r"Missing pipeline option \(runner\)"),
    re.compile(r"Couldn't find python-snappy"),
    re.compile(r"Examples artifact does not have payload_format custom property"),
)
CONSOLE_FORMAT = "%(asctime)s %(message)s"
DETAILED_CONSOLE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FILE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def is_project_logger(name: str) -> bool:
    return name.split(".", 1)[0] in PROJECT_PACKAGES


class QuietConsole(logging.Filter):
    """Passes the project's records at INFO and up, other libraries' at WARNING and up."""

    def filter(self, record: logging.LogRecord) -> bool:
        if is_project_logger(record.name):
            return True
        if record.levelno < logging.WARNING:
            return False
        message = record.getMessage()
        return not any(pattern.search(message) for pattern in HARMLESS_WARNINGS)


class _ProjectFormatter(logging.Formatter):
    """Project lines as `time message`; other libraries' lines and warnings also say level and logger."""

    def __init__(self) -> None:
        super().__init__(CONSOLE_FORMAT, datefmt="%H:%M:%S")
        self._detailed = logging.Formatter(DETAILED_CONSOLE_FORMAT, datefmt="%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        if record.levelno >= logging.WARNING or not is_project_logger(record.name):
            return self._detailed.format(record)
        return super().format(record)


class _BarSafeHandler(logging.StreamHandler):
    """Writes through tqdm when bars are on, so a log line does not tear a bar."""

    def emit(self, record: logging.LogRecord) -> None:
        if not bars_enabled():
            super().emit(record)
            return
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # noqa: BLE001 - logging must not raise
            self.handleError(record)


def bars_enabled() -> bool:
    """Progress bars only on a terminal and never under CI (`CAPTIONER_PROGRESS=plain` forces lines)."""
    if os.environ.get("CAPTIONER_PROGRESS", "").lower() == "plain" or os.environ.get("CI"):
        return False
    return sys.stderr.isatty()


def quiet_native_logs(verbose: bool = False) -> None:
    """TensorFlow's C++ start-up lines (cuDNN/cuFFT "Unable to register", CPU features) off unless
    verbose; must run before TensorFlow is imported."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if verbose else "3")


def setup_console(log_file: Path | None, verbose: bool = False) -> None:
    """Route logging: a quiet (or, verbose, full) console on stderr and the full log in log_file."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.setLevel(logging.INFO)
    console = _BarSafeHandler(sys.stderr)
    console.setFormatter(logging.Formatter(FILE_FORMAT) if verbose else _ProjectFormatter())
    if not verbose:
        console.addFilter(QuietConsole())
    root.addHandler(console)
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        to_file = logging.FileHandler(log_file, encoding="utf-8")
        to_file.setFormatter(logging.Formatter(FILE_FORMAT))
        root.addHandler(to_file)
    # absl keeps its level in a flag: TensorFlow's SavedModel export saves and restores that flag
    # (`get_verbosity`/`set_verbosity`), which would put absl back at its default WARNING and
    # drop the step records StepLines reads. Setting the flag itself keeps INFO through exports.
    absl_logging.set_verbosity(absl_logging.INFO)
    # MLflow writes "View run ... at: <url>" to stdout when a run on a server ends; the summary
    # names the run and its UI already.
    if not verbose:
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    # MLflow sets its own logger up when imported (later), from this variable.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "INFO" if verbose else "WARNING")


class Progress:
    """Progress of `total` units (None: unknown). On a terminal a tqdm bar; elsewhere a log line
    each time `interval` seconds have passed since the last one (the caller logs the totals)."""

    def __init__(self, description: str, total: int | None, unit: str, logger: logging.Logger, interval: float = 30.0):
        self.description, self.total, self.unit, self.log, self.interval = description, total, unit, logger, interval
        self.done = 0
        self._started = self._last = time.monotonic()
        self._first: tuple[float, int] | None = None  # (time, done) at the first update
        self._bar = None
        if bars_enabled():
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=description, unit=f" {unit}", leave=False, dynamic_ncols=True, file=sys.stderr)

    def update(self, count: int = 1) -> None:
        self.done += count
        if self._first is None:  # the first unit carries the start-up (tracing, model loading)
            self._first = (time.monotonic(), self.done)
        if self._bar is not None:
            self._bar.update(count)
            return
        now = time.monotonic()
        if now - self._last >= self.interval and (self.total is None or self.done < self.total):
            self._last = now
            self.log.info("%s", self.line(now))

    def line(self, now: float | None = None) -> str:
        """`description: done/total unit (pct), rate unit/s, ETA s` as far as known."""
        now = now or time.monotonic()
        rate = self.done / max(now - self._started, 1e-9)
        if self._first is not None and now > self._first[0] and self.done > self._first[1]:
            rate = (self.done - self._first[1]) / (now - self._first[0])  # the steady rate, after start-up
        if self.total:
            left = (self.total - self.done) / rate if rate > 0 else float("inf")
            return (f"{self.description}: {self.done}/{self.total} {self.unit} ({100 * self.done / self.total:.0f}%), "
                    f"{rate:.1f} {self.unit}/s, about {left:.0f} s left")
        return f"{self.description}: {self.done} {self.unit}, {rate:.1f} {self.unit}/s"

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class StepLines(logging.Handler):
    """One project line per finished pipeline step with its time, from LocalDagRunner's own
    "Component X is running." / "is finished." records (absl's logger). Attach it to the
    root logger: TFX's components reset the `absl` logger's own handlers."""

    _RUNNING = re.compile(r"Component (\S+) is running\.")
    _FINISHED = re.compile(r"Component (\S+) is finished\.")

    def __init__(self, total_steps: int, logger: logging.Logger):
        super().__init__(logging.INFO)
        self.total_steps, self.log = total_steps, logger
        self.steps: list[tuple[str, float]] = []  # (node id, seconds), in order
        self._started: dict[str, float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        if record.name != "absl" or not isinstance(record.msg, str) or not record.msg.startswith("Component "):
            return
        message = record.getMessage()
        if running := self._RUNNING.fullmatch(message):
            self._started[running.group(1)] = time.monotonic()
        elif finished := self._FINISHED.fullmatch(message):
            node = finished.group(1)
            started = self._started.pop(node, None)
            seconds = 0.0 if started is None else time.monotonic() - started
            self.steps.append((node, seconds))
            self.log.info("[%d/%d] %s: %.1f s", len(self.steps), self.total_steps, node, seconds)

"""Which versions of the model are loaded: watches the base directory, loads, switches, unloads.

Called by serving/local_server.py. It mirrors TF Serving's file-system source with the
`latest` version policy: numeric subdirectories of the base directory are versions; the
newest `num_versions` of them that load (plus any version a label pins) are loaded, newest
first, so a corrupt newest version leaves the one below it serving (its error shown in the
status); a
new version is loaded completely (and warmed up) before requests switch to it, and older
versions are unloaded only once a newer one is AVAILABLE. The loader is injected, so the
policy is tested without TensorFlow.

States (as in GetModelStatus): LOADING, AVAILABLE, END (unloaded, or failed to load:
then `error` says why, and the version is retried only when its files change).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable

from serving.rest import RestError

log = logging.getLogger(__name__)

LOADING, AVAILABLE, END = "LOADING", "AVAILABLE", "END"
DEFAULT_LABEL = "production"  # -> the newest AVAILABLE version unless a --label pins it


@dataclasses.dataclass
class VersionState:
    version: int
    state: str
    error: str = ""
    servable: Any = None
    fingerprint: tuple = ()

    def status_json(self) -> dict:
        return {
            "version": str(self.version),
            "state": self.state,
            "status": {"error_code": "UNKNOWN" if self.error else "OK", "error_message": self.error},
        }


def fingerprint(path: Path) -> tuple:
    """Names, sizes and mtimes of a SavedModel's files (a few stats): changes while a copy is in progress."""
    entries = []
    for sub in ("", "variables", "assets"):
        directory = path / sub
        try:
            with os.scandir(directory) as it:
                for entry in it:
                    if entry.is_file():
                        stat = entry.stat()
                        entries.append((sub, entry.name, stat.st_size, stat.st_mtime_ns))
        except FileNotFoundError:
            continue
    return tuple(sorted(entries))


def is_saved_model(path: Path) -> bool:
    return (path / "saved_model.pb").is_file() or (path / "saved_model.pbtxt").is_file()


class ModelVersions:
    """The versions of one model under base_dir, kept loaded by a background watcher thread."""

    def __init__(
        self,
        name: str,
        base_dir: Path | str,
        loader: Callable[[int, Path], Any],
        num_versions: int = 1,
        labels: dict[str, int] | None = None,
        poll_seconds: float = 2.0,
    ):
        if num_versions < 1:
            raise ValueError(f"num_versions must be >= 1, got {num_versions}")
        self.name = name
        self.base_dir = Path(base_dir)
        self.loader = loader
        self.num_versions = num_versions
        self.labels = dict(labels or {})  # label -> pinned version; DEFAULT_LABEL floats otherwise
        self.poll_seconds = poll_seconds
        self._states: dict[int, VersionState] = {}
        self._lock = threading.Lock()
        self._seen: dict[int, tuple] | None = None  # fingerprints at the previous scan
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._warned_missing = False

    # --------------------------------------------------------------------------------------
    # Watching and loading

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"{self.name}-versions", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.scan_once()
            except Exception:  # keep watching whatever happened to one scan
                log.exception("scanning %s failed", self.base_dir)
            self._stop.wait(self.poll_seconds)

    def _on_disk(self) -> dict[int, Path]:
        try:
            names = os.listdir(self.base_dir)
        except FileNotFoundError:
            if not self._warned_missing:
                log.warning("model base %s does not exist yet; waiting for a pushed version", self.base_dir)
                self._warned_missing = True
            return {}
        self._warned_missing = False
        found = {}
        for name in names:
            path = self.base_dir / name
            if name.isdigit() and path.is_dir() and is_saved_model(path):
                found[int(name)] = path
        return found

    def scan_once(self) -> None:
        """One poll: load what the policy wants (newest first, past versions that fail to load),
        then unload what it no longer wants."""
        on_disk = self._on_disk()
        prints = {version: fingerprint(path) for version, path in on_disk.items()}
        first_scan, previous = self._seen is None, self._seen or {}
        self._seen = prints

        def ensure(version: int) -> bool:
            """Loads a version unless it is loaded or pending; False when it fails to load."""
            with self._lock:
                state = self._states.get(version)
            if state is not None and state.state in (AVAILABLE, LOADING):
                return True
            if state is not None and state.error and state.fingerprint == prints[version]:
                return False  # failed before and its files have not changed since
            if not first_scan and previous.get(version) != prints[version]:
                return True  # new or still being written: wait until two scans agree
            return self._load(version, on_disk[version], prints[version])

        aspired = {v for v in self.labels.values() if v in on_disk}
        wanted = 0
        for version in sorted(on_disk, reverse=True):
            if wanted >= self.num_versions:
                break
            aspired.add(version)
            wanted += ensure(version)
        for version in sorted(aspired, reverse=True):
            ensure(version)  # the pinned ones (the others are done)
        self._unload_unwanted(aspired, on_disk)

    def _load(self, version: int, path: Path, prints: tuple) -> bool:
        with self._lock:
            self._states[version] = VersionState(version, LOADING, fingerprint=prints)
        log.info("version %d: loading %s", version, path)
        started = time.perf_counter()
        try:
            servable = self.loader(version, path)
        except Exception as error:  # a broken SavedModel must not stop the server
            # The status is public: the model base's location on this machine is not.
            message = f"{type(error).__name__}: {error}".strip().replace(f"{self.base_dir}{os.sep}", "")
            log.error("version %d: failed to load: %s", version, message)
            with self._lock:
                self._states[version] = VersionState(version, END, error=message, fingerprint=prints)
            return False
        with self._lock:
            self._states[version] = VersionState(version, AVAILABLE, servable=servable, fingerprint=prints)
        log.info("version %d: AVAILABLE (loaded in %.1f s)", version, time.perf_counter() - started)
        return True

    def _unload_unwanted(self, aspired: set[int], on_disk: dict[int, Path]) -> None:
        with self._lock:
            some_aspired_available = any(self._states.get(v) and self._states[v].state == AVAILABLE for v in aspired)
            for version, state in self._states.items():
                if state.state != AVAILABLE or version in aspired:
                    continue
                if some_aspired_available or version not in on_disk:
                    self._states[version] = VersionState(version, END, fingerprint=state.fingerprint)
                    log.info("version %d: unloaded (%s)", version, "removed from disk" if version not in on_disk else "superseded")

    def wait_until_available(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.available_versions():
                return True
            time.sleep(0.05)
        return False

    # --------------------------------------------------------------------------------------
    # Requests

    def available_versions(self) -> list[int]:
        with self._lock:
            return sorted(v for v, s in self._states.items() if s.state == AVAILABLE)

    def label_version(self, label: str) -> int:
        """The version a label names; 400 for an unknown label (TF Serving's InvalidArgument)."""
        if label in self.labels:
            return self.labels[label]
        if label == DEFAULT_LABEL:
            available = self.available_versions()
            if available:
                return available[-1]
            raise RestError(404, f"Servable not found for request: Latest({self.name}) (label {label}: no version is available yet)")
        known = sorted({DEFAULT_LABEL, *self.labels})
        raise RestError(400, f"Unrecognized servable version label: {label} (labels: {', '.join(known)})")

    def servable(self, version: int | None = None, label: str | None = None) -> Any:
        """The loaded servable for a request: a version, a label, or the newest; 404 otherwise."""
        if label is not None:
            version = self.label_version(label)
        with self._lock:
            if version is None:
                available = [s for s in self._states.values() if s.state == AVAILABLE]
                if available:
                    return max(available, key=lambda s: s.version).servable
                loading = sorted(v for v, s in self._states.items() if s.state == LOADING)
                failed = sorted(v for v, s in self._states.items() if s.error)
                if loading:
                    hint = f" (version {loading[-1]} is loading)"
                elif failed:
                    hint = f" (version {failed[-1]} failed to load; see the model status)"
                else:
                    hint = " (no version has been pushed yet)"
                raise RestError(404, f"Servable not found for request: Latest({self.name}){hint}")
            state = self._states.get(version)
            if state is None or state.state != AVAILABLE:
                detail = f" (version {version} is {state.state})" if state else ""
                raise RestError(404, f"Servable not found for request: Specific({self.name}, {version}){detail}")
            return state.servable

    def status(self, version: int | None = None, label: str | None = None) -> dict:
        """GetModelStatusResponse JSON: every version known, or the one asked for."""
        if label is not None:
            version = self.label_version(label)
        with self._lock:
            states = sorted(self._states.values(), key=lambda s: s.version, reverse=True)
        if version is not None:
            states = [s for s in states if s.version == version]
            if not states:
                raise RestError(404, f"Could not find version {version} of model {self.name}")
        if not states:
            raise RestError(404, f"Could not find any versions of model {self.name}")
        return {"model_version_status": [s.status_json() for s in states]}

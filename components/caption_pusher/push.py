"""Copies a SavedModel into TF Serving's layout, `<base_dir>/<version>/`, atomically.

Called by the CaptionPusher executor, and usable by hand (`push_model(src, base_dir)`).
  - Versions are integers that only grow: the next is the largest numeric directory + 1,
    starting at 1 (TF Serving serves the largest by default).
  - Atomic: the model is copied into `<base_dir>/.tmp-<version>-<random>` (a name TF Serving
    ignores, on the same file system) and then renamed to `<version>`, so a server polling
    the directory never sees a half-written version. A failed copy removes its temporary
    directory; a rename that loses a race to another pusher (the version directory appeared
    meanwhile) retries with the next number.
  - No duplicates: each pushed version carries `assets.extra/captioner_push.json` (TF
    Serving ignores `assets.extra`; it travels with the version, written before the
    rename) holding a content hash of the model. If the latest version already holds the
    same content, nothing is copied and that version is returned. Only the latest is
    compared: re-pushing an older model on purpose makes it the newest version again.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping

from models.contract import PUSH_RECORD_FILE
from tracking.run_record import read_push_record as read_source  # its reader, beside the other records'

log = logging.getLogger(__name__)

SOURCE_FILE = Path(PUSH_RECORD_FILE)
TMP_PREFIX = ".tmp-"
# Temporary directories older than this are leftovers of a killed push: removed.
STALE_TMP_SECONDS = 24 * 3600
_VERSION = re.compile(r"^[0-9]+$")
_MAX_RACES = 100


@dataclasses.dataclass(frozen=True)
class PushResult:
    version: int
    path: Path
    fingerprint: str
    # False when the latest version already held this very model and nothing was copied.
    copied: bool


def versions(base_dir: Path) -> list[int]:
    """Numeric version directories under base_dir, ascending ([] if it does not exist)."""
    if not base_dir.is_dir():
        return []
    return sorted(int(p.name) for p in base_dir.iterdir() if _VERSION.match(p.name) and p.is_dir())


def model_fingerprint(model_dir: Path) -> str:
    """sha256 over the relative paths and bytes of every file, `assets.extra/` excluded."""
    model_dir = Path(model_dir)
    if not (model_dir / "saved_model.pb").is_file():
        raise FileNotFoundError(f"{model_dir} is not a SavedModel directory (no saved_model.pb)")
    digest = hashlib.sha256()
    for path in sorted(p for p in model_dir.rglob("*") if p.is_file()):
        relative = path.relative_to(model_dir)
        if relative.parts[0] == SOURCE_FILE.parts[0]:
            continue
        digest.update(str(relative).encode() + b"\0")
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()


def push_model(
    model_dir: Path | str,
    base_dir: Path | str,
    source: Mapping[str, Any] | None = None,
) -> PushResult:
    """Push the SavedModel in `model_dir` as the next version under `base_dir`.

    `source` (e.g. the model artifact's id and uri) is stored in the push record.
    """
    model_dir, base_dir = Path(model_dir), Path(base_dir)
    fingerprint = model_fingerprint(model_dir)
    base_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_tmp_dirs(base_dir)

    existing = versions(base_dir)
    if existing:
        latest = base_dir / str(existing[-1])
        record = read_source(latest)
        if record and record.get("fingerprint") == fingerprint:
            log.info("version %d under %s already holds this model: nothing copied", existing[-1], base_dir)
            return PushResult(existing[-1], latest, fingerprint, copied=False)

    version = (existing[-1] + 1) if existing else 1
    tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{version}-", dir=base_dir))
    try:
        shutil.copytree(model_dir, tmp, dirs_exist_ok=True, copy_function=_copy_file)
        # The caller's source fields never replace ours: the fingerprint is the duplicate check.
        record = {**(source or {}), "fingerprint": fingerprint, "source_dir": str(model_dir), "pushed_at": time.time()}
        (tmp / SOURCE_FILE).parent.mkdir(parents=True, exist_ok=True)
        (tmp / SOURCE_FILE).write_text(json.dumps(record, indent=2) + "\n")
        _fsync_tree(tmp)
        for _ in range(_MAX_RACES):
            target = base_dir / str(version)
            try:
                # rename(2) replaces an *empty* directory silently: never let it.
                if target.exists():
                    raise FileExistsError(errno.EEXIST, "version exists", str(target))
                os.rename(tmp, target)
                _fsync_dir(base_dir)
                log.info("pushed %s to %s (version %d)", model_dir, target, version)
                return PushResult(version, target, fingerprint, copied=True)
            except OSError as e:
                if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
                # Another pusher took this number meanwhile: take the next free one.
                version = max([version] + versions(base_dir)) + 1
        raise RuntimeError(f"could not claim a version under {base_dir} after {_MAX_RACES} attempts")
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _copy_file(src: str, dst: str) -> str:
    return shutil.copy2(src, dst)


def _fsync_tree(root: Path) -> None:
    """Flush the copied files before the rename publishes them (a crash keeps no torn version)."""
    for path in root.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot fsync a directory; the rename stands anyway
        pass
    finally:
        os.close(fd)


def _remove_stale_tmp_dirs(base_dir: Path) -> None:
    now = time.time()
    for path in base_dir.glob(f"{TMP_PREFIX}*"):
        try:
            if path.is_dir() and now - path.stat().st_mtime > STALE_TMP_SECONDS:
                shutil.rmtree(path, ignore_errors=True)
                log.info("removed %s, left by an interrupted push", path)
        except OSError:
            pass

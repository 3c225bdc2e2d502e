"""A content hash of a dataset snapshot in the Flickr8k layout.

Called by the runners: the hash is an exec property of Flickr8kExampleGen, so TFX's cache
reuses ingestion only for byte-identical data, and it is recorded with every run so a
pushed model can be traced to the exact snapshot it was trained on.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from data import layout


def dataset_files(root: Path) -> list[Path]:
    """The files that make up a snapshot: images, captions and split files, sorted."""
    root = Path(root)
    files = sorted(p for p in (root / layout.IMAGE_DIR).iterdir() if p.is_file())
    files.append(root / layout.TOKEN_FILE)
    files.extend(root / name for name in layout.SPLIT_FILES.values())
    return [p for p in files if p.is_file()]


def fingerprint(root: Path) -> str:
    """sha256 over (relative path, sha256 of content) of every snapshot file."""
    root = Path(root)
    digest = hashlib.sha256()
    for path in dataset_files(root):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()

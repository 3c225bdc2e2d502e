"""Download, verify and lay out the Flickr8k dataset.

Who calls it:

* ``make data-flickr8k`` runs ``python -m data.download`` (see :func:`main`);
* the pipeline's data-dir resolution (data/resolve.py) calls :func:`prepare_flickr8k`
  when the data dir is not in the layout yet.

The two release archives come from the mirror most projects use (the
"Flickr8k" GitHub release of jbrownlee/Datasets) and are checked against their
published md5s before anything is extracted. The base URL can be overridden
(argument, ``--mirror`` or ``$CAPTIONER_FLICKR8K_MIRROR``) for a local mirror
or a test server.

Robustness is the point of this module, because the image archive is ~1 GB:
an interrupted download keeps its ``.part`` file and a rerun resumes it with an
HTTP Range request; extraction goes to a temporary directory that is renamed
into place only once complete; every step is idempotent, so rerunning after
success does no network traffic. Standard library only.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import logging
import os
import re
import shutil
import stat
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TextIO

from data import layout

log = logging.getLogger(__name__)

MIRROR_ENV = "CAPTIONER_FLICKR8K_MIRROR"
DEFAULT_MIRROR = "https://github.com/jbrownlee/Datasets/releases/download/Flickr8k"
IMAGES_ARCHIVE = "Flickr8k_Dataset.zip"
TEXT_ARCHIVE = "Flickr8k_text.zip"
# What the user is told before the download starts (both archives together).
RELEASE_SIZE = "about 1 GB"
# Published md5s of the release assets; prepare_flickr8k(checksums=...) overrides them.
CHECKSUMS: dict[str, str] = {
    IMAGES_ARCHIVE: "f18a1e2920de5bd84dae7cf08ec78978",
    TEXT_ARCHIVE: "bf6c1abcb8e4a833b7f922104de18627",
}

# The release layout is defined once, in data/layout.py.
IMAGES_DIR = layout.IMAGE_DIR
TOKEN_FILE = layout.TOKEN_FILE
SPLIT_FILES = tuple(layout.SPLIT_FILES.values())
# Entries macOS adds to archives; never part of the dataset.
JUNK_NAMES = frozenset({"__MACOSX", ".DS_Store"})

DEFAULT_TIMEOUT = 60.0
CHUNK_SIZE = 1 << 20
USER_AGENT = "captioner-data-download/0.1 (+python-urllib)"


class Flickr8kError(Exception):
    """Base of the errors the CLI reports as one line, without a traceback."""


class DownloadError(Flickr8kError):
    """The transfer failed; whatever arrived is kept in the .part file."""


class ChecksumError(Flickr8kError):
    """A downloaded file does not have its published md5 (it has been deleted)."""

    def __init__(self, name: str, expected: str, actual: str) -> None:
        super().__init__(
            f"checksum mismatch for {name}: expected md5 {expected}, got {actual}; "
            "the corrupt download was deleted, rerun to fetch it again"
        )
        self.name, self.expected, self.actual = name, expected, actual


class ArchiveError(Flickr8kError):
    """An archive is corrupt or lacks the files the layout needs."""


class UnsafeArchiveError(ArchiveError):
    """An archive entry could write outside the target directory."""


# --------------------------------------------------------------------------- download


def part_path(dest: Path) -> Path:
    """Where an unfinished download of `dest` lives, so a rerun can resume it."""
    return dest.with_suffix(dest.suffix + ".part")


def file_md5(path: Path, chunk_size: int = CHUNK_SIZE) -> str:
    """Hex md5 of a file, read in chunks so a 1 GB archive needs no 1 GB of memory."""
    digest = hashlib.md5(usedforsecurity=False)
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(chunk_size), b""):
            digest.update(block)
    return digest.hexdigest()


class _Progress:
    """Reports a transfer on stderr a few times rather than once per chunk.

    With a known size, a line at each new tenth (at most one per `min_interval`
    seconds, so fast transfers stay quiet); otherwise one per `unknown_interval`.
    """

    def __init__(
        self,
        name: str,
        start: int,
        total: int | None,
        enabled: bool,
        stream: TextIO | None = None,
        min_interval: float = 1.0,
        unknown_interval: float = 10.0,
    ) -> None:
        self.name, self.done, self.total, self.enabled = name, start, total, enabled
        self._stream = stream
        self._start_bytes = start
        self._t0 = self._last = time.monotonic()
        self._tenth = self._tenth_of(start)
        self._min_interval, self._unknown_interval = min_interval, unknown_interval

    def _tenth_of(self, done: int) -> int:
        return done * 10 // self.total if self.total else 0

    def update(self, n: int) -> None:
        self.done += n
        if not self.enabled:
            return
        now = time.monotonic()
        since = now - self._last
        if self.total:
            tenth = self._tenth_of(self.done)
            if tenth > self._tenth and tenth < 10 and since >= self._min_interval:
                self._tenth = tenth
                self._emit(now, "")
        elif since >= self._unknown_interval:
            self._emit(now, "")

    def finish(self) -> None:
        if self.enabled:
            self._emit(time.monotonic(), "done, ")

    def _emit(self, now: float, prefix: str) -> None:
        self._last = now
        elapsed = max(now - self._t0, 1e-6)
        rate = (self.done - self._start_bytes) / elapsed / 1e6
        size = f"{self.done / 1e6:.1f} MB"
        if self.total:
            size += f" / {self.total / 1e6:.1f} MB ({100 * self.done // self.total}%)"
        stream = self._stream or sys.stderr
        print(f"{self.name}: {prefix}{size}, {rate:.1f} MB/s, {elapsed:.1f} s", file=stream, flush=True)


def _open(url: str, offset: int, timeout: float) -> http.client.HTTPResponse | None:
    """GET `url` from byte `offset`; None when the server says that range is past the end (416)."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            exc.close()
            return None
        raise


def _response_start(response: http.client.HTTPResponse, offset: int) -> int | None:
    """Byte offset the response body starts at: 0 for a full answer, None for a range we did not ask for."""
    if response.status != 206:
        if offset:
            log.info("%s: the server ignored the Range request; restarting from zero", response.url)
        return 0
    match = re.match(r"bytes (\d+)-\d+/", response.headers.get("Content-Range", ""))
    if match and int(match.group(1)) == offset:
        return offset
    return None


def _stream_to(response: http.client.HTTPResponse, part: Path, start: int, chunk_size: int, progress: bool) -> None:
    """Append the body to `part` (truncated first when `start` is 0); a short body is a ConnectionError."""
    length = response.headers.get("Content-Length", "")
    total = start + int(length) if length.isdigit() else None
    bar = _Progress(part.name.removesuffix(".part"), start, total, progress)
    with part.open("ab" if start else "wb") as out:
        while block := response.read(chunk_size):
            out.write(block)
            bar.update(len(block))
    if total is not None and bar.done < total:
        raise ConnectionError(f"connection closed after {bar.done} of {total} bytes")
    bar.finish()


def _fetch_to_part(url: str, part: Path, timeout: float, chunk_size: int, progress: bool) -> None:
    """Bring `part` up to the whole remote file, resuming from what it already holds."""
    for _ in range(2):
        offset = part.stat().st_size if part.exists() else 0
        if offset:
            log.info("resuming %s from byte %d", url, offset)
        response = _open(url, offset, timeout)
        if response is None:
            log.info("%s: %s already holds the whole file", url, part.name)
            return
        with response:
            start = _response_start(response, offset)
            if start is not None:
                _stream_to(response, part, start, chunk_size, progress)
                return
        log.warning("%s: the server answered another range than asked; restarting from zero", url)
        part.unlink(missing_ok=True)  # nothing to drop when the reply to a fresh start was the wrong range
    raise OSError("the server keeps answering byte ranges that were not asked for")


def download_file(
    url: str,
    dest: Path,
    md5: str,
    progress: bool = True,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    chunk_size: int = CHUNK_SIZE,
) -> Path:
    """Download `url` to `dest`, resumably, and only publish it once its md5 matches.

    Idempotent: a `dest` that already has the right md5 is returned untouched.
    Raises DownloadError (partial file kept, a rerun resumes) or ChecksumError
    (partial file deleted).
    """
    dest, expected = Path(dest), md5.lower()
    if dest.exists():
        if file_md5(dest) == expected:
            log.info("%s already downloaded and verified", dest)
            return dest
        log.warning("%s does not have md5 %s; downloading it again", dest, expected)
        dest.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(dest)
    try:
        _fetch_to_part(url, part, timeout, chunk_size, progress)
    except (OSError, http.client.HTTPException, ValueError) as exc:
        kept = part.stat().st_size if part.exists() else 0
        advice = (
            f"the partial file {part} ({kept} bytes) is kept and a rerun resumes it"
            if kept
            else "rerun to try again"
        )
        raise DownloadError(f"downloading {url} failed: {exc}; {advice}") from exc
    actual = file_md5(part)
    if actual != expected:
        part.unlink(missing_ok=True)
        raise ChecksumError(dest.name, expected, actual)
    os.replace(part, dest)
    return dest


# --------------------------------------------------------------------------- extraction


def _check_member(archive_name: str, info: zipfile.ZipInfo) -> None:
    """Refuse entries that could land outside the target: absolute, drive, '..' or symlink."""
    name = info.filename
    if name.startswith(("/", "\\")):
        problem = "is an absolute path"
    elif re.match(r"[A-Za-z]:", name):
        problem = "has a drive letter"
    elif ".." in re.split(r"[/\\]", name):
        problem = "contains a '..' component"
    elif stat.S_ISLNK(info.external_attr >> 16):
        problem = "is a symbolic link"
    else:
        return
    raise UnsafeArchiveError(f"refusing archive {archive_name}: entry {name!r} {problem}")


def _move_into_place(staging: Path, target: Path) -> None:
    """Rename the finished `staging` dir to `target`, swapping out an existing one (overwrite)."""
    if not target.exists():
        os.replace(staging, target)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
    os.replace(target, old / target.name)
    try:
        os.replace(staging, target)
    except BaseException:
        os.replace(old / target.name, target)
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)


def safe_extract(zip_path: Path, target_dir: Path, overwrite: bool = False) -> Path:
    """Extract `zip_path` to `target_dir` atomically, refusing the whole archive if any entry is unsafe.

    The extraction happens in a temporary directory next to `target_dir` (same
    filesystem, so the final rename is atomic); on failure it is removed and
    `target_dir` is untouched. An existing `target_dir` is returned as is unless
    `overwrite`.
    """
    zip_path, target_dir = Path(zip_path), Path(target_dir)
    if target_dir.exists() and not overwrite:
        log.info("%s already extracted", target_dir)
        return target_dir
    target_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(zip_path) as archive:
            for info in archive.infolist():
                _check_member(zip_path.name, info)
            staging = Path(tempfile.mkdtemp(prefix=f".{target_dir.name}.", suffix=".extracting", dir=target_dir.parent))
            try:
                archive.extractall(staging)
                _move_into_place(staging, target_dir)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise ArchiveError(f"{zip_path.name} is not a valid zip archive: {exc}") from exc
    return target_dir


# --------------------------------------------------------------------------- layout


def resolve_mirror(mirror: str | None = None) -> str:
    """Base URL of the archives: the argument, else $CAPTIONER_FLICKR8K_MIRROR, else the GitHub release."""
    return (mirror or os.environ.get(MIRROR_ENV) or DEFAULT_MIRROR).rstrip("/")


def _content_root(extracted: Path) -> Path:
    """The folder holding an archive's content: junk dropped, single wrapping folders descended."""
    root = extracted
    while True:
        for entry in list(root.iterdir()):
            if entry.name in JUNK_NAMES and entry.is_dir():
                shutil.rmtree(entry)
            elif entry.name in JUNK_NAMES:
                entry.unlink()
        entries = list(root.iterdir())
        if len(entries) != 1 or not entries[0].is_dir():
            return root
        root = entries[0]


def _fetch_archive(name: str, mirror: str, downloads: Path, checksums: Mapping[str, str], progress: bool, timeout: float) -> Path:
    """Download one release archive into `downloads`, logging how long it took."""
    started = time.perf_counter()
    path = download_file(f"{mirror}/{name}", downloads / name, checksums[name], progress, timeout=timeout)
    log.info("%s ready (%.1f MB) in %.1f s", name, path.stat().st_size / 1e6, time.perf_counter() - started)
    return path


def _install_images(archive: Path, data_dir: Path) -> None:
    """Extract the image archive and move its image folder to data_dir/Flicker8k_Dataset."""
    started = time.perf_counter()
    staging = safe_extract(archive, archive.parent / ".extracted-images", overwrite=True)
    try:
        root = _content_root(staging)
        if not any(p.suffix.lower() == ".jpg" for p in root.iterdir()):
            raise ArchiveError(f"{archive.name} has no .jpg images at its top level or in a single folder")
        os.replace(root, data_dir / IMAGES_DIR)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("extracted %s to %s in %.1f s", archive.name, data_dir / IMAGES_DIR, time.perf_counter() - started)


def _install_text(archive: Path, data_dir: Path) -> None:
    """Extract the text archive and move the captions and split files to data_dir."""
    started = time.perf_counter()
    staging = safe_extract(archive, archive.parent / ".extracted-text", overwrite=True)
    try:
        root = _content_root(staging)
        if not (root / TOKEN_FILE).is_file():
            raise ArchiveError(f"{archive.name} has no {TOKEN_FILE} at its top level or in a single folder")
        for name in (TOKEN_FILE, *SPLIT_FILES):
            if (root / name).is_file():
                os.replace(root / name, data_dir / name)
            else:
                log.warning("%s has no %s; continuing without it", archive.name, name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("extracted %s to %s in %.1f s", archive.name, data_dir, time.perf_counter() - started)


def prepare_flickr8k(
    data_dir: Path,
    mirror: str | None = None,
    *,
    checksums: Mapping[str, str] | None = None,
    progress: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
) -> Path:
    """Download, verify and extract Flickr8k into the standard layout in `data_dir`; returns `data_dir`.

    Layout: Flicker8k_Dataset/*.jpg, Flickr8k.token.txt and the Flickr_8k.*Images.txt
    splits. Archives are kept in data_dir/downloads. Parts already in place are
    skipped, so a rerun after success does no network traffic. `checksums`
    overrides the published md5s by archive name (for mirrors and tests).
    """
    started = time.perf_counter()
    data_dir = Path(data_dir)
    base = resolve_mirror(mirror)
    sums = {**CHECKSUMS, **(checksums or {})}
    downloads = data_dir / "downloads"
    data_dir.mkdir(parents=True, exist_ok=True)
    log.info("preparing Flickr8k in %s from %s", data_dir, base)

    if (data_dir / IMAGES_DIR).is_dir():
        log.info("%s already in place", data_dir / IMAGES_DIR)
    else:
        _install_images(_fetch_archive(IMAGES_ARCHIVE, base, downloads, sums, progress, timeout), data_dir)

    if all((data_dir / name).is_file() for name in (TOKEN_FILE, *SPLIT_FILES)):
        log.info("captions and splits already in place")
    else:
        _install_text(_fetch_archive(TEXT_ARCHIVE, base, downloads, sums, progress, timeout), data_dir)

    n_images = sum(1 for p in (data_dir / IMAGES_DIR).iterdir() if p.suffix.lower() == ".jpg")
    log.info("Flickr8k ready in %s: %d images (%.1f s)", data_dir, n_images, time.perf_counter() - started)
    return data_dir


# --------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    """The CLI's parser, separate from main() so options can be added (e.g. --profile)."""
    parser = argparse.ArgumentParser(
        prog="python -m data.download",
        description=(
            "Download the Flickr8k release archives, verify their md5s and extract them into "
            f"DIR as {IMAGES_DIR}/*.jpg, {TOKEN_FILE} and the Flickr_8k.*Images.txt splits. "
            "Interrupted downloads resume on rerun; a rerun after success does nothing."
        ),
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        metavar="DIR",
        help="where to lay out the dataset (archives are kept in DIR/downloads)",
    )
    parser.add_argument(
        "--mirror",
        metavar="URL",
        help=(
            f"base URL holding {IMAGES_ARCHIVE} and {TEXT_ARCHIVE} "
            f"(default: ${MIRROR_ENV}, else {DEFAULT_MIRROR})"
        ),
    )
    parser.add_argument("--no-progress", action="store_true", help="do not report transfer progress on stderr")
    parser.add_argument(
        "--profile",
        metavar="NAME",
        help="take the data dir from a config profile (e.g. flickr8k; CAPTIONER_DATA_DIR overrides it)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (1 with a one-line message on a download or archive error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.data_dir is None and args.profile:
        from configs import load_config

        args.data_dir = load_config(args.profile).data_dir
    if args.data_dir is None:
        parser.error("--data-dir or --profile is required")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        prepare_flickr8k(args.data_dir, args.mirror, progress=not args.no_progress)
    except Flickr8kError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: partial downloads are kept and a rerun resumes them", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

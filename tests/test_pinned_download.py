"""Resuming a download when the server answers another byte range than asked (data/download.py).

A real HTTP server on 127.0.0.1 that answers every request with 206 and a Content-Range of
the test's choosing: a reply starting elsewhere than the partial file ends must not be
appended to it; the download restarts from zero instead, or fails if the server keeps lying.
"""

from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from data.download import DownloadError, download_file, part_path

pytestmark = pytest.mark.timeout(30)

DATA = bytes(range(256)) * 40  # 10240 bytes


class _Handler(BaseHTTPRequestHandler):
    """206 for a Range request, starting at `server.range_start` (None: no Content-Range)."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        server = self.server
        server.ranges.append(self.headers.get("Range"))
        if server.fail_with:
            self.send_error(server.fail_with)
            return
        asked = self.headers.get("Range")
        if asked is None and not server.lie_always:
            self.send_response(200)
            body = DATA
        else:
            start = server.range_start
            body = DATA[start or 0 :]
            self.send_response(206)
            if start is not None:
                self.send_header("Content-Range", f"bytes {start}-{len(DATA) - 1}/{len(DATA)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture
def server(monkeypatch):
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(var, "127.0.0.1,localhost")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.ranges, httpd.range_start, httpd.lie_always, httpd.fail_with = [], 0, False, None
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}/file.bin"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def partial(tmp_path: Path, size: int) -> Path:
    dest = tmp_path / "file.bin"
    part_path(dest).write_bytes(DATA[:size])
    return dest


MD5 = hashlib.md5(DATA).hexdigest()


@pytest.mark.parametrize("wrong_start", [0, 999, 1001, None], ids=["from-zero", "before", "after", "no-content-range"])
def test_a_206_from_another_offset_restarts_from_zero(server, tmp_path, wrong_start):
    dest = partial(tmp_path, 1000)
    server.range_start = wrong_start
    assert download_file(server.url, dest, MD5, progress=False) == dest
    assert dest.read_bytes() == DATA
    assert server.ranges == ["bytes=1000-", None]  # the resume, then a fresh start
    assert not part_path(dest).exists()


def test_a_206_from_the_asked_offset_is_appended(server, tmp_path):
    dest = partial(tmp_path, 1000)
    server.range_start = 1000
    download_file(server.url, dest, MD5, progress=False)
    assert dest.read_bytes() == DATA
    assert server.ranges == ["bytes=1000-"]


def test_a_server_that_keeps_answering_other_ranges_fails_the_download(server, tmp_path):
    dest = partial(tmp_path, 1000)
    server.range_start, server.lie_always = 5, True
    with pytest.raises(DownloadError, match="keeps answering byte ranges that were not asked for"):
        download_file(server.url, dest, MD5, progress=False)
    assert server.ranges == ["bytes=1000-", None]
    assert not dest.exists()


def test_safe_extract_returns_an_existing_target_untouched(tmp_path):
    import zipfile

    from data.download import safe_extract

    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("x.txt", b"new")
    target = tmp_path / "out"
    target.mkdir()
    (target / "x.txt").write_bytes(b"old")
    assert safe_extract(archive, target) == target
    assert (target / "x.txt").read_bytes() == b"old"
    assert safe_extract(archive, target, overwrite=True) == target
    assert (target / "x.txt").read_bytes() == b"new"


class _Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def monotonic(self) -> float:
        return self.now


def test_progress_lines_at_new_tenths_at_most_once_a_second(monkeypatch):
    import io

    from data import download

    clock, stream = _Clock(), io.StringIO()
    monkeypatch.setattr(download, "time", clock)
    bar = download._Progress("f", 2_000_000, 10_000_000, True, stream, min_interval=1.0)
    clock.now += 0.5
    bar.update(1_000_000)  # a new tenth, but too soon
    clock.now += 0.5
    bar.update(1_000_000)
    clock.now += 1.0
    bar.update(6_000_000)  # the last tenth is left to finish()
    clock.now += 1.0
    bar.finish()
    assert stream.getvalue().splitlines() == [
        "f: 4.0 MB / 10.0 MB (40%), 2.0 MB/s, 1.0 s",
        "f: done, 10.0 MB / 10.0 MB (100%), 2.7 MB/s, 3.0 s",
    ]


def test_progress_of_an_unknown_size_every_interval_and_none_when_disabled(monkeypatch):
    import io

    from data import download

    clock, stream = _Clock(), io.StringIO()
    monkeypatch.setattr(download, "time", clock)
    bar = download._Progress("g", 0, None, True, stream, unknown_interval=10.0)
    clock.now += 9.9
    bar.update(1_000_000)
    clock.now += 0.1
    bar.update(1_000_000)
    bar.finish()
    assert stream.getvalue().splitlines() == ["g: 2.0 MB, 0.2 MB/s, 10.0 s", "g: done, 2.0 MB, 0.2 MB/s, 10.0 s"]
    quiet, silent = download._Progress("h", 5, 100, False, stream), stream.getvalue()
    quiet.update(50)
    quiet.finish()
    assert quiet.done == 55 and stream.getvalue() == silent


def test_the_mirror_is_the_argument_else_the_environment_else_the_release(monkeypatch):
    from data.download import DEFAULT_MIRROR, MIRROR_ENV, resolve_mirror

    monkeypatch.setenv(MIRROR_ENV, "http://env.example/flickr8k//")
    assert resolve_mirror("http://arg.example/x/") == "http://arg.example/x"
    assert resolve_mirror() == "http://env.example/flickr8k"
    monkeypatch.delenv(MIRROR_ENV)
    assert resolve_mirror() == DEFAULT_MIRROR.rstrip("/")


def test_a_single_file_archive_is_its_own_content_root(tmp_path):
    from data.download import _content_root

    extracted = tmp_path / "x"
    (extracted / "__MACOSX").mkdir(parents=True)
    (extracted / ".DS_Store").write_bytes(b"junk")
    (extracted / "only.txt").write_bytes(b"data")
    assert _content_root(extracted) == extracted
    assert [p.name for p in extracted.iterdir()] == ["only.txt"]


def test_an_http_error_while_resuming_is_a_download_error_keeping_the_part(server, tmp_path):
    dest = partial(tmp_path, 1000)
    server.fail_with = 404
    with pytest.raises(DownloadError, match=r"HTTP Error 404.*the partial file .* \(1000 bytes\) is kept"):
        download_file(server.url, dest, MD5, progress=False)
    assert part_path(dest).read_bytes() == DATA[:1000]


@pytest.mark.parametrize(
    ("entry", "problem"),
    [("/etc/passwd", "is an absolute path"), ("\\server\\x", "is an absolute path"), ("C:/x", "has a drive letter"), ("a/../../x", "contains a '..' component")],
)
def test_unsafe_entries_are_refused_naming_the_problem(tmp_path, entry, problem):
    import zipfile

    from data.download import UnsafeArchiveError, safe_extract

    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("fine.txt", b"ok")
        z.writestr(zipfile.ZipInfo(entry), b"x")
    with pytest.raises(UnsafeArchiveError) as error:
        safe_extract(archive, tmp_path / "out")
    assert str(error.value) == f"refusing archive bad.zip: entry {entry!r} {problem}"
    assert not (tmp_path / "out").exists()


def test_by_default_a_download_reports_progress_and_creates_its_directory(server, tmp_path, capsys):
    server.range_start = None
    dest = tmp_path / "new" / "dir" / "file.bin"
    assert download_file(server.url, dest, MD5) == dest
    assert dest.read_bytes() == DATA
    assert "file.bin: done, " in capsys.readouterr().err

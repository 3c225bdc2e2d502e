"""Tests of data/download.py against a real local HTTP server and real zip files.

The server (http.server in a thread on 127.0.0.1) serves a tmp dir, honours
Range requests with 206/416, and can be told to ignore Range (answer 200) or
to drop the connection after N body bytes, which is how resumption is tested.
"""

from __future__ import annotations

import hashlib
import io
import random
import re
import stat
import subprocess
import sys
import threading
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from data import download
from data.download import (
    IMAGES_ARCHIVE,
    IMAGES_DIR,
    MIRROR_ENV,
    SPLIT_FILES,
    TEXT_ARCHIVE,
    TOKEN_FILE,
    ArchiveError,
    ChecksumError,
    DownloadError,
    UnsafeArchiveError,
    download_file,
    main,
    part_path,
    prepare_flickr8k,
    safe_extract,
)
from data.layout import looks_like_flickr8k_layout

pytestmark = pytest.mark.timeout(30)

TIMEOUT = 5.0  # seconds, for every socket on both sides


# --------------------------------------------------------------------------- local server


@dataclass
class Served:
    """What the test server serves and how, plus what it was asked."""

    root: Path
    url: str = ""
    ignore_range: bool = False
    drop_after: int | None = None  # the next response sends only this many body bytes
    requests: list[dict[str, str]] = field(default_factory=list)


def _range_start(header: str | None) -> int | None:
    match = re.fullmatch(r"bytes=(\d+)-", header or "")
    return int(match.group(1)) if match else None


class _Handler(BaseHTTPRequestHandler):
    timeout = TIMEOUT  # HTTP/1.0: one request per connection, closed afterwards

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        served: Served = self.server.served  # type: ignore[attr-defined]
        served.requests.append({"path": self.path, **{k.lower(): v for k, v in self.headers.items()}})
        file = served.root / self.path.lstrip("/")
        if not file.is_file():
            self.send_error(404)
            return
        data = file.read_bytes()
        start = None if served.ignore_range else _range_start(self.headers.get("Range"))
        if start is not None and start >= len(data):
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(data)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = data if start is None else data[start:]
        self.send_response(200 if start is None else 206)
        self.send_header("Content-Length", str(len(body)))
        if start is not None:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if served.drop_after is not None:
            body, served.drop_after = body[: served.drop_after], None
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:  # type: ignore[override]
        pass


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(var, "127.0.0.1,localhost")
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    root = tmp_path / "served"
    root.mkdir()
    served = Served(root)
    httpd = _Server(("127.0.0.1", 0), _Handler)
    httpd.served = served  # type: ignore[attr-defined]
    served.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield served
    httpd.shutdown()
    httpd.server_close()
    thread.join(TIMEOUT)


# --------------------------------------------------------------------------- helpers


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def payload(size: int = 300_000) -> bytes:
    return random.Random(size).randbytes(size)


def serve(served: Served, name: str, data: bytes) -> str:
    (served.root / name).write_bytes(data)
    return f"{served.url}/{name}"


def make_zip(path: Path, entries: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, data in entries.items():
            archive.writestr(zipfile.ZipInfo(name), data)
    return path


def fake_images_zip(path: Path, wrapped: bool = True) -> Path:
    """Shaped like the real Flickr8k_Dataset.zip: Flicker8k_Dataset/ plus __MACOSX/ junk."""
    prefix = f"{IMAGES_DIR}/" if wrapped else ""
    entries = {
        **({prefix: b""} if wrapped else {}),
        f"{prefix}1000268201_693b08cb0e.jpg": b"\xff\xd8fake-jpeg-1\xff\xd9",
        f"{prefix}1001773457_577c3a7d70.jpg": b"\xff\xd8fake-jpeg-2\xff\xd9",
        "__MACOSX/": b"",
        f"__MACOSX/{prefix}._1000268201_693b08cb0e.jpg": b"junk",
    }
    return make_zip(path, entries)


def fake_text_zip(path: Path, folder: str = "", with_test_split: bool = True) -> Path:
    """Shaped like the real Flickr8k_text.zip: the txt files at top level, plus others."""
    files = {
        TOKEN_FILE: b"1000268201_693b08cb0e.jpg#0\tA child in a pink dress .\n",
        "Flickr8k.lemma.token.txt": b"1000268201_693b08cb0e.jpg#0\tA child in a pink dress .\n",
        "Flickr_8k.trainImages.txt": b"1000268201_693b08cb0e.jpg\n",
        "Flickr_8k.devImages.txt": b"1001773457_577c3a7d70.jpg\n",
        "readme.txt": b"Flickr8k text\n",
    }
    if with_test_split:
        files["Flickr_8k.testImages.txt"] = b""
    return make_zip(path, {f"{folder}{name}": data for name, data in files.items()})


def serve_fake_release(served: Served, tmp_path: Path, **text_options: object) -> dict[str, str]:
    """Put fake archives on the server; returns their md5s as prepare_flickr8k(checksums=...) wants them."""
    images = fake_images_zip(tmp_path / "build" / IMAGES_ARCHIVE, wrapped=text_options.pop("wrapped_images", True))
    text = fake_text_zip(tmp_path / "build" / TEXT_ARCHIVE, **text_options)
    sums = {}
    for archive in (images, text):
        serve(served, archive.name, archive.read_bytes())
        sums[archive.name] = md5(archive.read_bytes())
    return sums


def leftovers(directory: Path) -> list[str]:
    """Temporary extraction dirs that should never survive a call."""
    return [p.name for p in directory.iterdir() if p.name.endswith((".extracting", ".old"))]


# --------------------------------------------------------------------------- download_file


def test_download_verifies_md5_and_publishes(server: Served, tmp_path: Path) -> None:
    data = payload()
    dest = tmp_path / "out" / "a.zip"
    result = download_file(serve(server, "a.zip", data), dest, md5(data), progress=False, timeout=TIMEOUT)
    assert result == dest
    assert dest.read_bytes() == data
    assert not part_path(dest).exists()
    assert "range" not in server.requests[0]


def test_md5_mismatch_raises_and_leaves_nothing(server: Served, tmp_path: Path) -> None:
    data = payload()
    dest = tmp_path / "a.zip"
    with pytest.raises(ChecksumError) as caught:
        download_file(serve(server, "a.zip", data), dest, "0" * 32, progress=False, timeout=TIMEOUT)
    message = str(caught.value)
    assert "a.zip" in message and "0" * 32 in message and md5(data) in message
    assert not dest.exists()
    assert not part_path(dest).exists()


def test_interrupted_download_resumes_with_range(server: Served, tmp_path: Path) -> None:
    data = payload()
    url, dest = serve(server, "a.zip", data), tmp_path / "a.zip"
    server.drop_after = 100_000
    with pytest.raises(DownloadError, match="kept and a rerun resumes"):
        download_file(url, dest, md5(data), progress=False, timeout=TIMEOUT)
    assert part_path(dest).stat().st_size == 100_000
    assert not dest.exists()

    download_file(url, dest, md5(data), progress=False, timeout=TIMEOUT)
    assert dest.read_bytes() == data
    assert server.requests[-1]["range"] == "bytes=100000-"
    assert not part_path(dest).exists()


def test_server_ignoring_range_still_gives_right_file(server: Served, tmp_path: Path) -> None:
    data = payload()
    dest = tmp_path / "a.zip"
    part_path(dest).write_bytes(b"stale bytes that must be discarded")
    server.ignore_range = True
    download_file(serve(server, "a.zip", data), dest, md5(data), progress=False, timeout=TIMEOUT)
    assert dest.read_bytes() == data
    assert server.requests[-1]["range"] == "bytes=34-"


def test_complete_part_file_is_accepted_on_416(server: Served, tmp_path: Path) -> None:
    data = payload()
    dest = tmp_path / "a.zip"
    part_path(dest).write_bytes(data)
    download_file(serve(server, "a.zip", data), dest, md5(data), progress=False, timeout=TIMEOUT)
    assert dest.read_bytes() == data
    assert server.requests[-1]["range"] == f"bytes={len(data)}-"


def test_second_call_makes_no_request(server: Served, tmp_path: Path) -> None:
    data = payload()
    url, dest = serve(server, "a.zip", data), tmp_path / "a.zip"
    download_file(url, dest, md5(data), progress=False, timeout=TIMEOUT)
    server.requests.clear()
    assert download_file(url, dest, md5(data), progress=False, timeout=TIMEOUT) == dest
    assert server.requests == []


def test_missing_file_is_a_download_error(server: Served, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="404.*rerun to try again"):
        download_file(f"{server.url}/nope.zip", tmp_path / "nope.zip", "0" * 32, progress=False, timeout=TIMEOUT)


def test_progress_goes_to_stderr(server: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = payload()
    download_file(serve(server, "a.zip", data), tmp_path / "a.zip", md5(data), progress=True, timeout=TIMEOUT)
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert out == ""
    assert 1 <= len(lines) <= 3
    assert "a.zip: done" in lines[-1] and "(100%)" in lines[-1] and "MB/s" in lines[-1]


def test_progress_is_throttled_to_a_few_lines() -> None:
    stream = io.StringIO()
    bar = download._Progress("f", 0, 1000, enabled=True, stream=stream, min_interval=0.0)
    for _ in range(1000):
        bar.update(1)
    bar.finish()
    assert len(stream.getvalue().splitlines()) <= 10


# --------------------------------------------------------------------------- safe_extract


def _symlink_zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("good.txt", b"ok")
        link = zipfile.ZipInfo("link")
        link.create_system = 3
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
    return path


@pytest.mark.parametrize("bad_name", ["../evil.txt", "/abs.txt", "a/../../evil.txt", "C:/evil.txt", "a\\..\\evil.txt", "link"])
def test_safe_extract_refuses_unsafe_archives(tmp_path: Path, bad_name: str) -> None:
    zip_path = tmp_path / "zips" / "bad.zip"
    if bad_name == "link":
        zip_path.parent.mkdir()
        _symlink_zip(zip_path)
    else:
        make_zip(zip_path, {"good.txt": b"ok", bad_name: b"evil"})
    out = tmp_path / "out"
    target = out / "target"
    with pytest.raises(UnsafeArchiveError, match=re.escape(repr(bad_name))):
        safe_extract(zip_path, target)
    assert not target.exists()
    assert not out.exists() or list(out.iterdir()) == []
    assert not list(tmp_path.rglob("evil.txt")) and not list(tmp_path.rglob("good.txt"))


def test_safe_extract_is_atomic_and_idempotent(tmp_path: Path) -> None:
    first = make_zip(tmp_path / "first.zip", {"top.txt": b"1", "sub/": b"", "sub/inner.txt": b"2"})
    target = tmp_path / "out" / "target"
    assert safe_extract(first, target) == target
    assert (target / "top.txt").read_bytes() == b"1"
    assert (target / "sub" / "inner.txt").read_bytes() == b"2"
    assert leftovers(target.parent) == []

    second = make_zip(tmp_path / "second.zip", {"other.txt": b"3"})
    safe_extract(second, target)
    assert (target / "top.txt").exists() and not (target / "other.txt").exists()

    safe_extract(second, target, overwrite=True)
    assert sorted(p.name for p in target.iterdir()) == ["other.txt"]
    assert leftovers(target.parent) == []


def test_safe_extract_failure_midway_leaves_target_absent(tmp_path: Path) -> None:
    zip_path = make_zip(tmp_path / "corrupt.zip", {"a.txt": b"A" * 1000, "b.txt": b"precious-payload"}, zipfile.ZIP_STORED)
    raw = zip_path.read_bytes()
    zip_path.write_bytes(raw.replace(b"precious-payload", b"precious-PAYLOAD"))
    target = tmp_path / "out" / "target"
    with pytest.raises(ArchiveError, match="corrupt.zip"):
        safe_extract(zip_path, target)
    assert not target.exists()
    assert list(target.parent.iterdir()) == []


def test_safe_extract_rejects_a_non_zip(tmp_path: Path) -> None:
    not_zip = tmp_path / "x.zip"
    not_zip.write_bytes(b"<html>rate limited</html>")
    with pytest.raises(ArchiveError, match="not a valid zip"):
        safe_extract(not_zip, tmp_path / "target")
    assert not (tmp_path / "target").exists()


# --------------------------------------------------------------------------- prepare_flickr8k


def assert_standard_layout(data_dir: Path, with_test_split: bool = True) -> None:
    images = sorted(p.name for p in (data_dir / IMAGES_DIR).iterdir())
    assert images == ["1000268201_693b08cb0e.jpg", "1001773457_577c3a7d70.jpg"]
    assert (data_dir / TOKEN_FILE).read_text().startswith("1000268201_693b08cb0e.jpg#0\t")
    for name in SPLIT_FILES:
        assert (data_dir / name).is_file() == (with_test_split or "test" not in name)
    assert not list(data_dir.rglob("__MACOSX"))
    assert looks_like_flickr8k_layout(data_dir)
    downloads = data_dir / "downloads"
    assert sorted(p.name for p in downloads.iterdir()) == [IMAGES_ARCHIVE, TEXT_ARCHIVE]


def test_prepare_flickr8k_end_to_end(server: Served, tmp_path: Path) -> None:
    sums = serve_fake_release(server, tmp_path)
    data_dir = tmp_path / "data"
    assert prepare_flickr8k(data_dir, server.url, checksums=sums, progress=False, timeout=TIMEOUT) == data_dir
    assert_standard_layout(data_dir)
    assert {r["path"] for r in server.requests} == {f"/{IMAGES_ARCHIVE}", f"/{TEXT_ARCHIVE}"}

    server.requests.clear()
    prepare_flickr8k(data_dir, server.url, checksums=sums, progress=False, timeout=TIMEOUT)
    assert server.requests == []
    assert_standard_layout(data_dir)


def test_prepare_flickr8k_tolerates_other_archive_shapes(server: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sums = serve_fake_release(server, tmp_path, wrapped_images=False, folder="Flickr8k_text/", with_test_split=False)
    monkeypatch.setenv(MIRROR_ENV, server.url + "/")  # the mirror comes from the environment here
    data_dir = tmp_path / "data"
    prepare_flickr8k(data_dir, checksums=sums, progress=False, timeout=TIMEOUT)
    assert_standard_layout(data_dir, with_test_split=False)


def test_prepare_flickr8k_checks_the_published_md5s(server: Served, tmp_path: Path) -> None:
    serve_fake_release(server, tmp_path)
    data_dir = tmp_path / "data"
    with pytest.raises(ChecksumError, match=f"{IMAGES_ARCHIVE}.*{download.CHECKSUMS[IMAGES_ARCHIVE]}"):
        prepare_flickr8k(data_dir, server.url, progress=False, timeout=TIMEOUT)
    assert not looks_like_flickr8k_layout(data_dir)
    assert list((data_dir / "downloads").iterdir()) == []


def test_prepare_flickr8k_refuses_an_unsafe_image_archive(server: Served, tmp_path: Path) -> None:
    sums = serve_fake_release(server, tmp_path)
    evil = make_zip(tmp_path / "build" / "evil.zip", {f"{IMAGES_DIR}/a.jpg": b"x", "../../evil.txt": b"evil"})
    serve(server, IMAGES_ARCHIVE, evil.read_bytes())
    sums[IMAGES_ARCHIVE] = md5(evil.read_bytes())
    data_dir = tmp_path / "data"
    with pytest.raises(UnsafeArchiveError, match="evil.txt"):
        prepare_flickr8k(data_dir, server.url, checksums=sums, progress=False, timeout=TIMEOUT)
    assert not (data_dir / IMAGES_DIR).exists()
    assert not list(tmp_path.rglob("evil.txt"))
    assert leftovers(data_dir / "downloads") == []


def test_looks_like_flickr8k_layout(tmp_path: Path) -> None:
    assert not looks_like_flickr8k_layout(tmp_path / "missing")
    (tmp_path / IMAGES_DIR).mkdir()
    assert not looks_like_flickr8k_layout(tmp_path)
    (tmp_path / TOKEN_FILE).write_text("x.jpg#0\ta caption\n")
    assert looks_like_flickr8k_layout(str(tmp_path))


# --------------------------------------------------------------------------- CLI


def test_cli_prepares_the_dataset(server: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in serve_fake_release(server, tmp_path).items():
        monkeypatch.setitem(download.CHECKSUMS, name, value)
    data_dir = tmp_path / "data"
    assert main(["--data-dir", str(data_dir), "--mirror", server.url, "--no-progress"]) == 0
    assert looks_like_flickr8k_layout(data_dir)


def test_cli_reports_errors_in_one_line(server: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    serve_fake_release(server, tmp_path)  # their md5s are not the published ones
    assert main(["--data-dir", str(tmp_path / "data"), "--mirror", server.url, "--no-progress"]) == 1
    err_lines = capsys.readouterr().err.splitlines()
    assert err_lines[-1].startswith("error: checksum mismatch for Flickr8k_Dataset.zip")
    assert "Traceback" not in "\n".join(err_lines)


def test_cli_requires_a_data_dir(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main([])
    assert caught.value.code == 2
    assert "--data-dir or --profile is required" in capsys.readouterr().err


def test_cli_runs_as_a_module_with_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "data.download", "--help"],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0
    assert "--data-dir" in result.stdout and "--mirror" in result.stdout and MIRROR_ENV in result.stdout

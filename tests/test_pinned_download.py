"""Resuming a download when the server answers another byte range than asked (data/download.py).

A real HTTP server on 127.0.0.1 that answers every request with 206 and a Content-Range of
the test's choosing: a reply starting elsewhere than the partial file ends must not be
appended to it; the download restarts from zero instead, or fails if the server keeps lying.
"""

from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
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


# --------------------------------------------------------------------------- prepare_flickr8k and the CLI


class _QuietFiles(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture
def release(tmp_path, monkeypatch):
    """A mirror on 127.0.0.1 serving a tiny release (two images, captions, three splits),
    with its md5s made the published ones for the test."""
    import functools
    import zipfile

    from data import download

    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(var, "127.0.0.1,localhost")
    monkeypatch.delenv(download.MIRROR_ENV, raising=False)
    root = tmp_path / "mirror"
    root.mkdir()
    images = {"1000_a.jpg": b"\xff\xd8one\xff\xd9", "2000_b.JPG": b"\xff\xd8two\xff\xd9", "Thumbs.db": b"not an image"}
    with zipfile.ZipFile(root / download.IMAGES_ARCHIVE, "w") as z:
        for name, data in images.items():
            z.writestr(f"{download.IMAGES_DIR}/{name}", data)
    texts = {download.TOKEN_FILE: "1000_a.jpg#0\ta dog .\n2000_b.jpg#0\ta cat .\n"}
    texts.update({name: "1000_a.jpg\n" for name in download.SPLIT_FILES})
    with zipfile.ZipFile(root / download.TEXT_ARCHIVE, "w") as z:
        for name, text in texts.items():
            z.writestr(name, text)
    for name in (download.IMAGES_ARCHIVE, download.TEXT_ARCHIVE):
        monkeypatch.setitem(download.CHECKSUMS, name, hashlib.md5((root / name).read_bytes()).hexdigest())
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietFiles, directory=str(root)))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield {"url": f"http://127.0.0.1:{httpd.server_address[1]}", "images": images, "texts": texts}
    httpd.shutdown()
    httpd.server_close()


def _assert_laid_out(data_dir: Path, release: dict) -> None:
    from data.download import IMAGES_DIR

    assert {p.name: p.read_bytes() for p in (data_dir / IMAGES_DIR).iterdir()} == release["images"]
    for name, text in release["texts"].items():
        assert (data_dir / name).read_text() == text


def test_prepare_flickr8k_creates_missing_parents_and_reports_progress_by_default(release, tmp_path, capsys):
    from data.download import IMAGES_ARCHIVE, TEXT_ARCHIVE, prepare_flickr8k

    data_dir = tmp_path / "not" / "yet" / "there"
    assert prepare_flickr8k(data_dir, release["url"]) == data_dir
    _assert_laid_out(data_dir, release)
    err = capsys.readouterr().err
    assert f"{IMAGES_ARCHIVE}: done, " in err and f"{TEXT_ARCHIVE}: done, " in err


def test_prepare_flickr8k_is_quiet_without_progress(release, tmp_path, capsys):
    from data.download import prepare_flickr8k

    prepare_flickr8k(tmp_path / "data", release["url"], progress=False)
    _assert_laid_out(tmp_path / "data", release)
    assert capsys.readouterr().err == ""


def test_safe_extract_creates_the_missing_parents_of_its_target(tmp_path):
    import zipfile

    from data.download import safe_extract

    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("x.txt", b"x")
    target = tmp_path / "deep" / "er" / "out"
    assert safe_extract(archive, target) == target
    assert (target / "x.txt").read_bytes() == b"x"


def _profile_with_data_dir(tmp_path: Path, data_dir: Path) -> Path:
    profile = tmp_path / "mine.yaml"
    profile.write_text(f"extends: smoke\ndata:\n  data_dir: {data_dir}\n")
    return profile


def test_cli_takes_the_data_dir_from_a_profile(release, tmp_path, monkeypatch):
    from data.download import main

    monkeypatch.delenv("CAPTIONER_DATA_DIR", raising=False)
    data_dir = tmp_path / "from-profile"
    profile = _profile_with_data_dir(tmp_path, data_dir)
    assert main(["--profile", str(profile), "--mirror", release["url"], "--no-progress"]) == 0
    _assert_laid_out(data_dir, release)


def test_cli_data_dir_wins_over_the_profile(release, tmp_path, monkeypatch):
    from data.download import main

    monkeypatch.delenv("CAPTIONER_DATA_DIR", raising=False)
    profile = _profile_with_data_dir(tmp_path, tmp_path / "from-profile")
    chosen = tmp_path / "chosen"
    assert main(["--data-dir", str(chosen), "--profile", str(profile), "--mirror", release["url"], "--no-progress"]) == 0
    _assert_laid_out(chosen, release)
    assert not (tmp_path / "from-profile").exists()


def test_cli_reports_progress_unless_told_not_to(release, tmp_path, capsys):
    from data.download import IMAGES_ARCHIVE, main

    assert main(["--data-dir", str(tmp_path / "data"), "--mirror", release["url"]]) == 0
    assert f"{IMAGES_ARCHIVE}: done, " in capsys.readouterr().err


def test_cli_interrupted_exits_130_saying_a_rerun_resumes(tmp_path, monkeypatch, capsys):
    from data import download

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(download, "prepare_flickr8k", interrupted)
    assert download.main(["--data-dir", str(tmp_path / "data"), "--no-progress"]) == 130
    assert capsys.readouterr().err == "interrupted: partial downloads are kept and a rerun resumes them\n"


def test_progress_defaults_at_most_a_line_a_second_and_every_ten_seconds_of_unknown_size(monkeypatch):
    import io

    from data import download

    clock, stream = _Clock(), io.StringIO()
    monkeypatch.setattr(download, "time", clock)
    known = download._Progress("k", 0, 10_000_000, True, stream)
    clock.now += 0.75
    known.update(5_000_000)  # half-way, but within a second of the start
    clock.now += 0.25
    known.update(1_000_000)
    clock.now += 1.0
    known.update(3_500_000)  # 95%: the last tenth before the end gets its line too
    unknown = download._Progress("u", 0, None, True, stream)
    clock.now += 9.75
    unknown.update(1)
    clock.now += 0.25
    unknown.update(1)
    assert [line.split(", ")[0] for line in stream.getvalue().splitlines()] == [
        "k: 6.0 MB / 10.0 MB (60%)",
        "k: 9.5 MB / 10.0 MB (95%)",
        "u: 0.0 MB",
    ]


def test_prepare_flickr8k_logs_how_many_images_it_laid_out(release, tmp_path, caplog):
    import logging

    from data.download import prepare_flickr8k

    data_dir = tmp_path / "data"
    n_images = sum(1 for name in release["images"] if name.lower().endswith(".jpg"))
    with caplog.at_level(logging.INFO, logger="data.download"):
        prepare_flickr8k(data_dir, release["url"], progress=False)
    assert any(
        r.getMessage().startswith(f"Flickr8k ready in {data_dir}: {n_images} images (") for r in caplog.records
    )


def test_leftovers_of_a_killed_extraction_are_replaced_not_reused(release, tmp_path):
    """A process killed mid-extraction leaves its staging folders behind (no finally runs):
    the next run must extract afresh, not lay out what the dead one left."""
    from data.download import IMAGES_DIR, prepare_flickr8k

    data_dir = tmp_path / "data"
    stale_images = data_dir / "downloads" / ".extracted-images" / IMAGES_DIR
    stale_images.mkdir(parents=True)
    (stale_images / "9999_stale.jpg").write_bytes(b"stale")
    stale_text = data_dir / "downloads" / ".extracted-text"
    stale_text.mkdir()
    for name in release["texts"]:
        (stale_text / name).write_text("stale\n")
    prepare_flickr8k(data_dir, release["url"], progress=False)
    _assert_laid_out(data_dir, release)


def test_a_failed_swap_puts_the_old_target_back(tmp_path, monkeypatch):
    import zipfile

    from data import download

    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("x.txt", b"new")
    target = tmp_path / "out"
    target.mkdir()
    (target / "x.txt").write_bytes(b"old")
    real_replace = download.os.replace

    def replace(src, dst):
        if str(src).endswith(".extracting"):
            raise OSError("disk trouble")
        return real_replace(src, dst)

    monkeypatch.setattr(download.os, "replace", replace)
    with pytest.raises(OSError, match="disk trouble"):
        download.safe_extract(archive, target, overwrite=True)
    assert (target / "x.txt").read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zip", "out"]


def test_a_symlink_entry_is_refused_naming_the_problem(tmp_path):
    import stat
    import zipfile

    from data.download import UnsafeArchiveError, safe_extract

    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as z:
        link = zipfile.ZipInfo("shortcut")
        link.create_system = 3
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        z.writestr(link, "/etc/passwd")
    with pytest.raises(UnsafeArchiveError) as error:
        safe_extract(archive, tmp_path / "out")
    assert str(error.value) == "refusing archive link.zip: entry 'shortcut' is a symbolic link"


def test_cli_usage_errors_name_the_command_and_its_options(monkeypatch, capsys):
    """The usage line a user gets for a wrong call shows what to type: `python -m data.download`
    (what `make data-flickr8k` runs) and a placeholder after each option taking a value."""
    from data.download import main

    monkeypatch.setenv("COLUMNS", "200")  # argparse wraps the usage to the terminal width
    with pytest.raises(SystemExit) as caught:
        main([])
    assert caught.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        "usage: python -m data.download [-h] [--data-dir DIR] [--mirror URL] [--no-progress] [--profile NAME]",
        "python -m data.download: error: --data-dir or --profile is required",
    ]


def test_the_cli_logs_each_step_with_its_time_and_level(tmp_path):
    """`python -m data.download` on a data dir already laid out: no network, and every log
    line on stderr starts with a timestamp and the level, as in the rest of the tools."""
    import re
    import subprocess
    import sys

    from data.download import IMAGES_DIR, SPLIT_FILES, TOKEN_FILE

    data_dir = tmp_path / "data"
    (data_dir / IMAGES_DIR).mkdir(parents=True)
    (data_dir / IMAGES_DIR / "1000_a.jpg").write_bytes(b"\xff\xd8\xff\xd9")
    for name in (TOKEN_FILE, *SPLIT_FILES):
        (data_dir / name).write_text("1000_a.jpg\n")
    result = subprocess.run(
        [sys.executable, "-m", "data.download", "--data-dir", str(data_dir), "--no-progress"],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO "
    assert len(lines) == 4 and all(re.match(stamp, line) for line in lines), lines
    assert re.fullmatch(stamp + f"Flickr8k ready in {re.escape(str(data_dir))}: 1 images \\(\\d+\\.\\d s\\)", lines[-1])

"""The `caption` CLI against `python -m serving.local_server` running as a real process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from serving import cli
from tests.images import grayscale_png, solid_rgb
from tests.serving_models import REPO, local_server_process, push_version, tiny_model


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "serving.cli", *args],
        capture_output=True, text=True, timeout=300, cwd=REPO, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )


@pytest.fixture()
def images(tmp_path: Path) -> Path:
    """Two good images (one in a subdirectory), a text file named like a JPEG, and a .txt file."""
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    (folder / "red.jpg").write_bytes(solid_rgb(48, 64))
    (folder / "sub" / "gray.png").write_bytes(grayscale_png(32, 32))
    (folder / "broken.jpg").write_text("this is text, not a JPEG\n")
    (folder / "cat.txt").write_text("meow\n")
    return folder


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> str:
    base = tmp_path_factory.mktemp("cli_models") / "captioner"
    push_version(tiny_model(tmp_path_factory.getbasetemp()), base, 1)
    with local_server_process(base, tmp_path_factory.getbasetemp() / "cli_server.log") as url:
        yield url


@pytest.mark.e2e
def test_directory_with_a_bad_file_prints_good_results_and_names_the_bad_one(server, images):
    result = run_cli("--url", server, "--json", str(images))
    assert result.returncode == 1, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["path"] for line in lines] == [str(images / "red.jpg"), str(images / "sub" / "gray.png")]
    for line in lines:
        assert isinstance(line["caption"], str) and line["version"] == 1
        assert "alternatives" not in line
    assert f"error: {images / 'broken.jpg'}: not an image (Unknown image file format" in result.stderr
    assert "cat.txt" not in result.stderr + result.stdout  # directories give only image formats


@pytest.mark.e2e
def test_explicit_text_file_and_missing_file_are_errors_beside_good_results(server, images):
    result = run_cli("--url", server, "--json", str(images / "red.jpg"), str(images / "cat.txt"), str(images / "gone.png"))
    assert result.returncode == 1
    assert [json.loads(line)["path"] for line in result.stdout.splitlines()] == [str(images / "red.jpg")]
    assert f"error: {images / 'cat.txt'}: not an image (Unknown image file format" in result.stderr
    assert f"error: {images / 'gone.png'}: no such file or directory" in result.stderr


@pytest.mark.e2e
def test_beam_alternatives_progress_and_plain_output(server, images, capsys):
    code = cli.main(["--url", server, "--json", "--beam", "--batch-size", "1", str(images / "*.jpg"), str(images / "sub")])
    out, err = capsys.readouterr()
    assert code == 1  # the glob matches broken.jpg too
    results = [json.loads(line) for line in out.splitlines()]
    assert len(results) == 2
    for line in results:
        assert len(line["alternatives"]) == len(line["scores"]) == 2
        assert line["caption"] == line["alternatives"][0]
    assert "img/s" in err and "[3/3]" in err  # progress: more than one request

    code = cli.main(["--url", server, str(images / "red.jpg"), str(images / "sub")])
    out, _ = capsys.readouterr()
    assert code == 0
    assert [line.split("\t")[0] for line in out.splitlines()] == [str(images / "red.jpg"), str(images / "sub" / "gray.png")]


@pytest.mark.e2e
def test_unknown_version_is_a_clear_exit_2(server, images, capsys):
    assert cli.main(["--url", server, "--model-version", "7", str(images / "red.jpg")]) == 2
    assert "Specific(captioner, 7)" in capsys.readouterr().err


def test_unreachable_server_is_one_clear_message_and_exit_2(images, capsys):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    assert cli.main(["--url", url, str(images)]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1, err
    assert url in err and "make serve-local" in err


def test_url_defaults_to_the_environment(monkeypatch):
    monkeypatch.setenv("CAPTIONER_URL", "http://example.invalid:9")
    assert cli.build_parser().parse_args(["x.jpg"]).url == "http://example.invalid:9"


def test_collect_files_recurses_for_images_only(images):
    files, errors = cli.collect_files([str(images), str(images / "red.jpg"), str(images / "none*.png")])
    assert files == [images / "broken.jpg", images / "red.jpg", images / "sub" / "gray.png"]
    assert errors == [f"{images / 'none*.png'}: no file matches this pattern"]


@pytest.mark.e2e
def test_a_file_over_the_request_limit_is_skipped_and_the_others_captioned(server, images, tmp_path):
    big = tmp_path / "huge.jpg"
    big.write_bytes(b"\xff\xd8\xff" + bytes(8 * 2**20))  # 8 MB: about 10.7 MB once base64'd
    result = run_cli("--url", server, "--json", str(big), str(images / "red.jpg"), str(images / "sub" / "gray.png"))
    assert result.returncode == 1, result.stderr
    assert [json.loads(line)["path"] for line in result.stdout.splitlines()] == [
        str(images / "red.jpg"), str(images / "sub" / "gray.png")
    ]
    assert f"error: {big}: too large for the server (8.0 MB" in result.stderr and "skipped" in result.stderr
    assert "cannot reach" not in result.stderr


@pytest.mark.e2e
def test_a_client_limit_above_the_servers_gets_the_servers_413_per_file(server, images, tmp_path):
    big = tmp_path / "huge.jpg"
    big.write_bytes(b"\xff\xd8\xff" + bytes(8 * 2**20))
    result = run_cli("--url", server, "--max-request-mb", "100", str(big), str(images / "red.jpg"))
    assert result.returncode == 1, result.stderr
    assert result.stdout.startswith(str(images / "red.jpg"))
    assert f"error: {big}: too large for the server" in result.stderr


def test_batches_keep_each_request_under_the_size_limit():
    from serving.client import request_bytes

    files = [(Path(f"{i}.jpg"), size) for i, size in enumerate([300, 300, 300, 900, 10])]
    limit = request_bytes([300, 300])
    plan = [[p.name for p, _ in batch] for batch in cli.batches(files, 16, limit)]
    assert plan == [["0.jpg", "1.jpg"], ["2.jpg"], ["3.jpg"], ["4.jpg"]]
    assert [[p.name for p, _ in b] for b in cli.batches(files, 2, 10**9)] == [["0.jpg", "1.jpg"], ["2.jpg", "3.jpg"], ["4.jpg"]]
    assert request_bytes([3]) == 128 + 4 + 16


def test_the_client_refuses_a_request_over_its_limit_without_sending_it():
    from serving.client import CaptionClient, RequestTooLarge

    client = CaptionClient("http://127.0.0.1:9", max_request_bytes=1000)  # nothing listens there
    with pytest.raises(RequestTooLarge) as error:
        client.caption([bytes(2000)])
    assert error.value.status == 413 and "over the server's limit" in error.value.message


@pytest.mark.e2e
def test_a_dash_reads_one_image_from_stdin(server, images):
    """`-` is the image on stdin: captioned like the same bytes in a file, beside other files."""
    same = images / "same_as_stdin.png"
    same.write_bytes(grayscale_png(32, 32))
    result = subprocess.run(
        [sys.executable, "-m", "serving.cli", "--url", server, "--json", "--beam", "-", str(same)],
        input=same.read_bytes(), capture_output=True, timeout=300, cwd=REPO,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert result.returncode == 0, result.stderr
    stdin_line, file_line = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert stdin_line["path"] == "-" and file_line["path"] == str(same)
    assert {k: v for k, v in stdin_line.items() if k != "path"} == {k: v for k, v in file_line.items() if k != "path"}


def test_version_prints_the_tools_version(capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"caption {cli.tool_version()}"
    assert cli.tool_version() == "0.1.0"  # pyproject.toml's version, as installed by make install


def test_directory_scans_take_every_format_the_model_decodes(tmp_path):
    from PIL import Image

    for name, fmt in (("a.gif", "GIF"), ("b.bmp", "BMP"), ("c.JPG", "JPEG"), ("d.png", "PNG")):
        Image.new("RGB", (8, 8), (200, 10, 10)).save(tmp_path / name, format=fmt)
    (tmp_path / "notes.txt").write_text("not an image")
    files, errors = cli.collect_files([str(tmp_path)])
    assert [p.name for p in files] == ["a.gif", "b.bmp", "c.JPG", "d.png"] and errors == []

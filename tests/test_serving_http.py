"""The local server's HTTP layer under hostile clients, over real sockets, without a model.

A CaptionServer watching an empty model base (so no TensorFlow is imported): framing
(Content-Length, short bodies), deadlines for slow clients, the connection cap, static
paths, and TF Serving's status codes and messages for URLs and methods. The same server
with a model is tested in tests/test_serving_rest.py.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from pathlib import Path

import pytest

from serving.local_server import CaptionServer
from serving.versions import ModelVersions

MODEL = "/v1/models/captioner"
HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.0


def never_loaded(version: int, path: Path):
    raise AssertionError("no version exists, nothing is loaded")


def start(tmp_path: Path, **options) -> CaptionServer:
    web = tmp_path / "web"
    web.mkdir(exist_ok=True)
    (web / "index.html").write_text("<!doctype html><title>captioner</title>")
    versions = ModelVersions("captioner", tmp_path / "models", never_loaded, labels={"stable": 1})
    server = CaptionServer(
        ("127.0.0.1", 0), versions, max_body_bytes=1000, static_dir=web,
        header_timeout=options.pop("header_timeout", HEADER_TIMEOUT),
        body_timeout=options.pop("body_timeout", BODY_TIMEOUT), **options,
    )
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server


@pytest.fixture()
def server(tmp_path: Path):
    server = start(tmp_path)
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture()
def cors_server(tmp_path: Path):
    server = start(tmp_path, cors=True)
    yield server
    server.shutdown()
    server.server_close()


def connect(server: CaptionServer) -> socket.socket:
    return socket.create_connection(server.server_address[:2], timeout=10)


def exchange(server: CaptionServer, raw: bytes, method: str = "GET") -> tuple[int, dict, bytes, bytes]:
    """Sends raw bytes; (status, headers, body, whatever else the server sent before closing)."""
    with connect(server) as sock:
        sock.sendall(raw)
        response = http.client.HTTPResponse(sock, method=method)
        response.begin()
        body = response.read()
        sock.settimeout(3)
        rest = b""
        try:
            while chunk := sock.recv(4096):
                rest += chunk
        except (TimeoutError, ConnectionResetError):
            pass
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body, rest


def http_request(server: CaptionServer, method: str, path: str, body: bytes = b"", headers: str = "") -> tuple[int, dict, bytes]:
    raw = f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}"
    if body or method == "POST":
        raw += f"Content-Length: {len(body)}\r\n"
    status, headers_out, body_out, _ = exchange(server, raw.encode("latin-1") + b"\r\n" + body, method)
    return status, headers_out, body_out


def error_of(body: bytes) -> str:
    return json.loads(body)["error"]


# ----------------------------------------------------------------------------------------------
# Framing


@pytest.mark.parametrize("value", ["\u00b2", "-5", "5, 5", "0x10", " ", "1e3", "99999999999999999999"])
def test_a_content_length_that_is_not_ascii_digits_is_a_400(server, value):
    raw = f"POST {MODEL}:predict HTTP/1.1\r\nHost: x\r\nContent-Length: {value}\r\n\r\n{{}}".encode("latin-1")
    status, _, body, _ = exchange(server, raw, "POST")
    assert status == 400 and "Content-Length" in error_of(body)


def test_conflicting_content_lengths_are_refused_and_the_rest_is_never_parsed(server):
    smuggled = f"GET {MODEL} HTTP/1.1\r\nHost: x\r\n\r\n"
    body = "{}" + smuggled
    raw = (
        f"POST {MODEL}:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: {len(body)}\r\n\r\n{body}"
    ).encode()
    status, headers, answer, after = exchange(server, raw, "POST")
    assert status == 400 and "Conflicting Content-Length" in error_of(answer)
    assert headers["connection"] == "close"
    assert after == b""  # no second answer: the smuggled request was never read


def test_repeated_identical_content_length_is_one_length(server):
    raw = f"POST {MODEL}:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{{}}".encode()
    status, _, body, _ = exchange(server, raw, "POST")
    assert status == 404 and "Servable not found" in error_of(body)  # framing passed; no model here


def test_a_body_shorter_than_its_content_length_is_cut_off_after_the_body_timeout(server):
    with connect(server) as sock:
        sock.sendall(f"POST {MODEL}:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n{{\"inst".encode())
        started = time.monotonic()
        response = http.client.HTTPResponse(sock, method="POST")
        response.begin()
        elapsed = time.monotonic() - started
        assert response.status == 408 and "Request Timeout" in error_of(response.read())
    assert BODY_TIMEOUT * 0.8 < elapsed < BODY_TIMEOUT + 2


def test_a_body_trickled_byte_by_byte_is_cut_off_all_the_same(server):
    with connect(server) as sock:
        sock.sendall(f"POST {MODEL}:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n".encode())
        started = time.monotonic()
        sock.settimeout(0.2)
        reply = b""
        while time.monotonic() - started < BODY_TIMEOUT + 3 and not reply:
            try:
                sock.sendall(b" ")
                reply = sock.recv(4096)
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
    assert reply.startswith(b"HTTP/1.1 408")
    assert time.monotonic() - started < BODY_TIMEOUT + 2


def test_headers_trickled_slowly_are_cut_off_after_the_header_timeout(server):
    with connect(server) as sock:
        started = time.monotonic()
        sock.settimeout(0.2)
        reply, closed = b"", False
        for byte in f"GET {MODEL} HTTP/1.1\r\nHost: x\r\nX-Slow: {'a' * 100}".encode():
            try:
                sock.sendall(bytes([byte]))
                reply += sock.recv(4096)
                if reply:
                    break
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            if time.monotonic() - started > HEADER_TIMEOUT + 3:
                break
    assert reply.startswith(b"HTTP/1.1 408") or closed
    assert time.monotonic() - started < HEADER_TIMEOUT + 2


def test_connections_over_the_cap_get_503_and_the_server_recovers(tmp_path):
    server = start(tmp_path, max_connections=2, header_timeout=30)
    try:
        idle = [connect(server), connect(server)]  # hold both slots without sending anything
        time.sleep(0.2)
        status, _, body, _ = exchange(server, f"GET {MODEL} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert status == 503 and "Too many connections" in error_of(body)
        for sock in idle:
            sock.close()
        time.sleep(0.3)
        assert http_request(server, "GET", MODEL)[0] == 404  # served again (no versions here)
    finally:
        server.shutdown()
        server.server_close()


# ----------------------------------------------------------------------------------------------
# Static files


@pytest.mark.parametrize("path", ["/%00", "/index.html%00.js", "/" + "a" * 300, "/" + "b/" * 3000, "/%2e%2e/%2e%2e/etc/passwd", "/%0a"])
def test_odd_static_paths_are_404_without_internal_paths(server, path, tmp_path):
    status, _, body = http_request(server, "GET", path)
    assert status == 404, body
    assert str(tmp_path) not in body.decode() and "/tmp" not in body.decode()
    assert len(body) < 400


def test_head_answers_without_a_body(server):
    status, headers, body = http_request(server, "GET", "/")
    head_status, head_headers, head_body = http_request(server, "HEAD", "/")
    assert (status, head_status) == (200, 200)
    assert head_headers["content-length"] == headers["content-length"] and head_body == b""
    with connect(server) as sock:  # nothing at all after the headers
        sock.sendall(b"HEAD /v1/models/captioner HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        sock.settimeout(5)
        raw = b""
        while chunk := sock.recv(4096):
            raw += chunk
    assert raw.startswith(b"HTTP/1.1 400") and raw.endswith(b"\r\n\r\n")


# ----------------------------------------------------------------------------------------------
# TF Serving's codes and messages


@pytest.mark.parametrize(
    "method,path,status,message",
    [
        ("GET", "/v1/models", 400, "Missing model name in request."),
        ("GET", "/v1/models/", 400, "Malformed request: GET /v1/models/"),
        ("GET", f"{MODEL}:predict", 400, f"Malformed request: GET {MODEL}:predict"),
        ("POST", f"{MODEL}:explode", 400, f"Malformed request: POST {MODEL}:explode"),
        ("POST", f"{MODEL}:PREDICT", 400, f"Malformed request: POST {MODEL}:PREDICT"),
        ("POST", MODEL, 400, f"Malformed request: POST {MODEL}"),
        ("POST", "/v1/whatever", 400, "Malformed request: POST /v1/whatever"),
        ("PUT", MODEL, 400, f"Malformed request: PUT {MODEL}"),
        ("DELETE", f"{MODEL}:predict", 400, f"Malformed request: DELETE {MODEL}:predict"),
        ("FROB", MODEL, 400, f"Malformed request: FROB {MODEL}"),
        ("OPTIONS", MODEL, 400, f"Malformed request: OPTIONS {MODEL}"),
        ("FROB", "/index.html", 405, "Method FROB is not supported"),
        ("DELETE", "/index.html", 405, "Method DELETE is not supported"),
        ("GET", f"{MODEL}/labels/canary", 400, "Unrecognized servable version label: canary"),
        ("POST", f"{MODEL}/labels/canary:predict", 400, "Unrecognized servable version label: canary"),
        ("GET", "/V1/MODELS/captioner", 404, "Could not find any versions of model captioner"),  # matched, no version
        ("POST", "/V1/Models/captioner:predict", 404, "Servable not found for request: Latest(captioner)"),
        ("GET", "/v1/models/other", 404, "Could not find any versions of model other"),
        ("POST", "/v2/models/captioner:predict", 404, "Not found: POST /v2/models/captioner:predict"),
    ],
)
def test_urls_and_methods_get_tf_servings_codes(server, method, path, status, message):
    got, _, body = http_request(server, method, path, b"{}" if method == "POST" else b"")
    assert got == status, body
    assert error_of(body).startswith(message)


def test_no_version_pushed_yet_says_so_without_the_model_path(server, tmp_path):
    _, _, body = http_request(server, "POST", f"{MODEL}:predict", b"{}")
    assert "no version has been pushed yet" in error_of(body) and str(tmp_path) not in error_of(body)


def test_cors_support_answers_preflight_and_marks_every_answer(cors_server):
    status, headers, body = http_request(
        cors_server, "OPTIONS", f"{MODEL}:predict",
        headers="Origin: http://example.com\r\nAccess-Control-Request-Method: POST\r\n",
    )
    assert status == 204 and body == b""
    assert headers["access-control-allow-origin"] == "*"
    assert "POST" in headers["access-control-allow-methods"]
    assert "Content-Type" in headers["access-control-allow-headers"]
    status, headers, _ = http_request(cors_server, "GET", MODEL)
    assert status == 404 and headers["access-control-allow-origin"] == "*"


def test_without_cors_support_no_cors_headers(server):
    _, headers, _ = http_request(server, "GET", "/")
    assert "access-control-allow-origin" not in headers

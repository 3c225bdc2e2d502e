"""The local REST server against a real (tiny, untrained) exported model, over real HTTP.

Checks TF Serving's request and response formats, every kind of bad input (right 4xx,
an {"error": ...} body, and the server still answers a good request afterwards), status
and metadata, and that a version pushed while the server runs is picked up.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.images import animated_gif, grayscale_png, jpeg_claiming, png_bomb, solid_rgb
from tests.serving_models import local_server, push_version, tiny_model

pytestmark = pytest.mark.e2e

MAX_BODY_MB = 0.2  # ~200 KB: the tiny test images and a PNG bomb fit, the oversized payload does not
MODEL = "/v1/models/captioner"


def b64(data: bytes) -> dict:
    return {"b64": base64.b64encode(data).decode("ascii")}


GOOD = solid_rgb(40, 60)
OTHER = grayscale_png(30, 20)


def request(url: str, path: str, body=None, raw: bytes | None = None) -> tuple[int, dict, dict]:
    """(status, JSON body, headers) of a GET (no body) or POST."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url + path, data=data)
    try:
        with urllib.request.urlopen(req, timeout=60) as response:
            return response.status, json.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read()), dict(error.headers)


def predict(url: str, body=None, path: str = f"{MODEL}:predict", raw: bytes | None = None):
    return request(url, path, body, raw)


def assert_still_serving(url: str) -> None:
    status, body, _ = predict(url, {"instances": [b64(GOOD)]})
    assert status == 200, body
    assert isinstance(body["predictions"][0]["caption"], str)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> str:
    model = tiny_model(tmp_path_factory.getbasetemp())
    base = tmp_path_factory.mktemp("rest_models") / "captioner"
    push_version(model, base, 1)
    web = tmp_path_factory.mktemp("web")
    (web / "index.html").write_text("<!doctype html><title>captioner</title>")
    with local_server(base, "--max-body-mb", str(MAX_BODY_MB), "--label", "stable=1", "--static-dir", str(web)) as url:
        yield url


# ----------------------------------------------------------------------------------------------
# Formats


def test_row_format_gives_one_object_per_image_with_named_outputs(server):
    status, body, headers = predict(server, {"instances": [b64(GOOD), b64(OTHER)]})
    assert status == 200, body
    assert set(body) == {"predictions"}
    assert len(body["predictions"]) == 2
    for prediction in body["predictions"]:  # several output tensors: objects keyed by name
        assert set(prediction) == {"caption", "log_probability"}
        assert isinstance(prediction["caption"], str) and prediction["log_probability"] <= 0
    assert headers["X-Model-Version"] == "1"


def test_row_format_named_input_and_plain_and_columnar_agree(server):
    row = predict(server, {"instances": [b64(GOOD)]})[1]["predictions"]
    named = predict(server, {"instances": [{"images": b64(GOOD)}]})[1]["predictions"]
    columnar = predict(server, {"inputs": {"images": [b64(GOOD)]}})[1]
    columnar_plain = predict(server, {"inputs": [b64(GOOD)]})[1]
    assert row == named
    # Columnar answers hold one list per output tensor, the row answer one object per image.
    assert columnar == columnar_plain == {"outputs": {k: [p[k] for p in row] for k in row[0]}}


def test_beam_search_row_format_gives_objects(server):
    status, body, _ = predict(server, {"signature_name": "beam_search", "instances": [b64(GOOD), b64(OTHER)]})
    assert status == 200, body
    for prediction in body["predictions"]:
        assert set(prediction) == {"caption", "alternatives", "scores"}
        assert len(prediction["alternatives"]) == len(prediction["scores"]) == 2  # beam_width 2
        assert prediction["caption"] == prediction["alternatives"][0]
        assert all(isinstance(s, float) for s in prediction["scores"])


def test_beam_search_columnar_format_gives_one_object_of_outputs(server):
    status, body, _ = predict(server, {"signature_name": "beam_search", "inputs": {"images": [b64(GOOD)]}})
    assert status == 200, body
    outputs = body["outputs"]
    assert set(outputs) == {"caption", "alternatives", "scores"}
    assert len(outputs["caption"]) == 1 and len(outputs["alternatives"][0]) == 2


def test_greedy_signature_and_default_agree(server):
    default = predict(server, {"instances": [b64(GOOD)]})[1]
    greedy = predict(server, {"signature_name": "greedy", "instances": [b64(GOOD)]})[1]
    assert default == greedy


@pytest.mark.parametrize("path", [f"{MODEL}/versions/1:predict", f"{MODEL}/labels/production:predict", f"{MODEL}/labels/stable:predict"])
def test_version_and_label_urls(server, path):
    status, body, headers = predict(server, {"instances": [b64(GOOD)]}, path=path)
    assert status == 200, body
    assert headers["X-Model-Version"] == "1"


def test_a_batch_split_into_small_graph_calls_answers_as_one_call(server, tmp_path_factory):
    """--max-execution-batch-size 2 runs 5 images as 3 graph calls; the answer is the one-call
    answer in the same order, and a bad image in the last call still fails the whole request."""
    images = [b64(solid_rgb(30 + 7 * i, 40, rgb=(40 * i, 200 - 30 * i, 90))) for i in range(5)]
    body = {"signature_name": "beam_search", "instances": images}
    status, whole, _ = predict(server, body)
    assert status == 200, whole
    base = tmp_path_factory.mktemp("split_models") / "captioner"
    push_version(tiny_model(tmp_path_factory.getbasetemp()), base, 1)
    with local_server(base, "--max-execution-batch-size", "2") as url:
        status, split, _ = predict(url, body)
        assert status == 200, split
        assert [p["alternatives"] for p in split["predictions"]] == [p["alternatives"] for p in whole["predictions"]]
        for ours, theirs in zip(split["predictions"], whole["predictions"]):
            assert ours["scores"] == pytest.approx(theirs["scores"], abs=1e-4)
        status, error, _ = predict(url, {"instances": images[:4] + [{"b64": base64.b64encode(b"not an image").decode()}]})
        assert status == 400 and "error" in error
        assert_still_serving(url)


def test_concurrent_requests_all_succeed(server):
    statuses = []

    def client():
        for _ in range(3):
            statuses.append(predict(server, {"instances": [b64(GOOD), b64(OTHER)]})[0])

    threads = [threading.Thread(target=client) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * 18


# ----------------------------------------------------------------------------------------------
# Bad input: the right 4xx, an {"error": ...} body, and the server goes on serving

BAD_REQUESTS = {
    "malformed JSON": (f"{MODEL}:predict", b'{"instances": [', 400, "JSON Parse error"),
    "empty body": (f"{MODEL}:predict", b"", 400, "empty"),
    "not a JSON object": (f"{MODEL}:predict", b"[1, 2]", 400, "Is not object"),
    "body not UTF-8": (f"{MODEL}:predict", b'{"instances": ["\xff"]}', 400, "JSON Parse error"),
    "missing keys": (f"{MODEL}:predict", {}, 400, "Missing 'inputs' or 'instances' key"),
    "wrong top-level key": (f"{MODEL}:predict", {"images": [b64(GOOD)]}, 400, "Missing 'inputs' or 'instances' key"),
    "both instances and inputs": (f"{MODEL}:predict", {"instances": [b64(GOOD)], "inputs": [b64(GOOD)]}, 400, "only one of"),
    "wrong input name": (f"{MODEL}:predict", {"instances": [{"image": b64(GOOD)}]}, 400, "named input: image"),
    "wrong columnar input name": (f"{MODEL}:predict", {"inputs": {"image": [b64(GOOD)]}}, 400, "Missing named input: images"),
    "instances not a list": (f"{MODEL}:predict", {"instances": b64(GOOD)}, 400, "list/array"),
    "number instead of bytes": (f"{MODEL}:predict", {"instances": [3]}, 400, "DT_STRING"),
    "non-image bytes": (f"{MODEL}:predict", {"instances": [b64(b"this is not an image")]}, 400, "Unknown image file format"),
    "empty image bytes": (f"{MODEL}:predict", {"instances": [{"b64": ""}]}, 400, "image bytes are empty"),
    "a bad image in a good batch": (f"{MODEL}:predict", {"instances": [b64(GOOD), b64(b"plain text")]}, 400, "Unknown image file format"),
    "invalid base64": (f"{MODEL}:predict", {"instances": [{"b64": "not*base64!"}]}, 400, "base64"),
    "empty batch (row)": (f"{MODEL}:predict", {"instances": []}, 400, "No values in 'instances'"),
    "empty batch (columnar)": (f"{MODEL}:predict", {"inputs": {"images": []}}, 400, "empty"),
    "unknown signature": (f"{MODEL}:predict", {"signature_name": "nope", "instances": [b64(GOOD)]}, 400, '"nope" not found'),
    "signature name not a string": (f"{MODEL}:predict", {"signature_name": 3, "instances": [b64(GOOD)]}, 400, "signature_name"),
    "classify API": (f"{MODEL}:classify", {"examples": [{"x": 1}]}, 400, "not supported"),
    "unknown model": ("/v1/models/nope:predict", {"instances": [b64(GOOD)]}, 404, "Latest(nope)"),
    "unknown version": (f"{MODEL}/versions/42:predict", {"instances": [b64(GOOD)]}, 404, "Specific(captioner, 42)"),
    "unknown label": (f"{MODEL}/labels/canary:predict", {"instances": [b64(GOOD)]}, 400, "label: canary"),
    "unknown verb": (f"{MODEL}:explain", {"instances": [b64(GOOD)]}, 400, "Malformed request: POST"),
    "unknown path": ("/v2/whatever", {"instances": [b64(GOOD)]}, 404, "Not found"),
    "lone surrogate in an instance": (f"{MODEL}:predict", b'{"instances": ["\\ud800"]}', 400, "surrogate"),
    "lone surrogate in signature_name": (f"{MODEL}:predict", b'{"signature_name": "\\ud800", "instances": ["x"]}', 400, "surrogate"),
    "lone surrogate in a key": (f"{MODEL}:predict", b'{"instances": [{"\\ud800": "x"}]}', 400, "surrogate"),
    "url-safe base64 with junk": (f"{MODEL}:predict", {"instances": [{"b64": "-_8*!"}]}, 400, "base64"),
    "PNG bomb": (f"{MODEL}:predict", {"instances": [b64(png_bomb(23_000, 23_000))]}, 400, "23000x23000 pixels"),
    "JPEG lying about its size": (f"{MODEL}:predict", {"instances": [b64(jpeg_claiming(13_000, 13_000))]}, 400, "13000x13000"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS), ids=list(BAD_REQUESTS))
def test_bad_request_gets_4xx_with_error_body_and_server_keeps_serving(server, case):
    path, body, expected_status, expected_text = BAD_REQUESTS[case]
    raw = body if isinstance(body, bytes) else None
    status, answer, _ = predict(server, None if raw is not None else body, path=path, raw=raw)
    assert status == expected_status, answer
    assert set(answer) == {"error"} and isinstance(answer["error"], str)
    assert expected_text in answer["error"]
    assert_still_serving(server)


def test_payload_over_the_limit_gets_413(server):
    images = [b64(bytes(range(256)) * 1000)]  # ~340 KB of base64, over the ~200 KB limit
    status, answer, _ = predict(server, {"instances": images})
    assert status == 413, answer
    assert "over the limit" in answer["error"]
    assert_still_serving(server)


def test_413_is_decided_from_content_length_before_the_body_is_read(server):
    """Only headers are sent: the server answers at once instead of waiting for 100 MB."""
    host, port = urlsplit(server).hostname, urlsplit(server).port
    with socket.create_connection((host, port), timeout=10) as connection:
        connection.sendall(
            f"POST {MODEL}:predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {100 * 2**20}\r\n\r\n".encode()
        )
        connection.sendall(b'{"instances": [')  # a little of the body, then nothing more
        reply = b""
        while b"\r\n\r\n" not in reply:
            chunk = connection.recv(4096)
            assert chunk, "the server closed the connection without an answer"
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 413")
    assert_still_serving(server)


def test_garbage_request_line_is_a_4xx(server):
    host, port = urlsplit(server).hostname, urlsplit(server).port
    with socket.create_connection((host, port), timeout=10) as connection:
        connection.sendall(b"HELLO\r\n\r\n")
        reply = connection.recv(4096)
    assert reply.split()[1].startswith(b"4"), reply
    assert_still_serving(server)


# ----------------------------------------------------------------------------------------------
# Status and metadata


def test_status_lists_the_available_version(server):
    expected = {"model_version_status": [{"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}
    for path in (MODEL, f"{MODEL}/versions/1", f"{MODEL}/labels/production", f"{MODEL}/labels/stable"):
        status, body, _ = request(server, path)
        assert (status, body) == (200, expected), path


@pytest.mark.parametrize(
    "path,expected,text",
    [(f"{MODEL}/versions/9", 404, "Could not find version 9"), ("/v1/models/nope", 404, "nope"),
     (f"{MODEL}/labels/canary", 400, "Unrecognized servable version label: canary")],
)
def test_status_of_unknown_things_is_4xx(server, path, expected, text):
    status, body, _ = request(server, path)
    assert status == expected and text in body["error"]


def test_metadata_has_tf_serving_shape(server):
    status, body, _ = request(server, f"{MODEL}/metadata")
    assert status == 200, body
    assert body["model_spec"] == {"name": "captioner", "signature_name": "", "version": "1"}
    signatures = body["metadata"]["signature_def"]["signature_def"]
    assert {"serving_default", "greedy", "beam_search"} <= set(signatures)
    for name in ("serving_default", "greedy", "beam_search"):
        images = signatures[name]["inputs"]["images"]
        assert images["dtype"] == "DT_STRING"
        assert images["tensor_shape"]["dim"][0]["size"] == "-1"
        assert signatures[name]["method_name"] == "tensorflow/serving/predict"
    assert set(signatures["beam_search"]["outputs"]) == {"caption", "alternatives", "scores"}
    assert signatures["beam_search"]["outputs"]["scores"]["dtype"] == "DT_FLOAT"
    assert set(signatures["greedy"]["outputs"]) == {"caption", "log_probability"}
    assert request(server, f"{MODEL}/versions/1/metadata")[0] == 200
    assert request(server, f"{MODEL}/versions/5/metadata")[0] == 404


# ----------------------------------------------------------------------------------------------
# A new version pushed while the server runs


def test_new_version_is_picked_up_without_dropping_requests(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path):
    greedy_model = tiny_model(tmp_path_factory.getbasetemp())
    # Version 2 answers serving_default with beam search: its predictions are recognisably its own.
    beam_model = tiny_model(tmp_path_factory.getbasetemp(), default="beam_search")
    base = tmp_path / "captioner"
    push_version(greedy_model, base, 1)
    with local_server(base) as url:
        assert set(predict(url, {"instances": [b64(GOOD)]})[1]["predictions"][0]) == {"caption", "log_probability"}

        statuses: list[int] = []
        stop = threading.Event()

        def keep_asking():
            while not stop.is_set():
                statuses.append(predict(url, {"instances": [b64(GOOD)]})[0])

        asker = threading.Thread(target=keep_asking)
        asker.start()
        try:
            push_version(beam_model, base, 2)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                states = {s["version"]: s["state"] for s in request(url, MODEL)[1]["model_version_status"]}
                if states.get("2") == "AVAILABLE":
                    break
                time.sleep(0.2)
            else:
                pytest.fail(f"version 2 never became AVAILABLE: {states}")
        finally:
            stop.set()
            asker.join()
        assert statuses and set(statuses) == {200}, "requests failed while the new version loaded"

        states = {s["version"]: s["state"] for s in request(url, MODEL)[1]["model_version_status"]}
        assert states["2"] == "AVAILABLE"
        status, body, headers = predict(url, {"instances": [b64(GOOD)]})
        assert status == 200 and headers["X-Model-Version"] == "2"
        assert set(body["predictions"][0]) == {"caption", "alternatives", "scores"}  # version 2's default
        # Version 1 is unloaded once version 2 is AVAILABLE (latest policy, one version).
        deadline = time.monotonic() + 10
        while states.get("1") != "END" and time.monotonic() < deadline:
            time.sleep(0.1)
            states = {s["version"]: s["state"] for s in request(url, MODEL)[1]["model_version_status"]}
        assert states["1"] == "END"
        assert predict(url, {"instances": [b64(GOOD)]}, path=f"{MODEL}/versions/1:predict")[0] == 404
        assert request(url, f"{MODEL}/labels/production")[1]["model_version_status"][0]["version"] == "2"


def test_web_page_is_served_and_nothing_outside_it(server):
    with urllib.request.urlopen(server + "/", timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/html"
        assert b"captioner" in response.read()
    for path in ("/missing.js", "/..%2f..%2fetc%2fpasswd", "/%2e%2e/%2e%2e/etc/passwd"):
        status, body, _ = request(server, path)
        assert status == 404 and "error" in body, path


def test_many_frame_gif_is_captioned_from_its_first_frame_only(server):
    gif = animated_gif(frames=40, size=30)
    first = animated_gif(frames=1, size=30)
    assert len(gif) > 20 * len(first)
    status, body, _ = predict(server, {"instances": [b64(gif), b64(first)]})
    assert status == 200, body
    assert body["predictions"][0] == body["predictions"][1]


def test_after_a_restart_a_corrupt_newest_version_leaves_the_older_one_serving(tmp_path_factory, tmp_path):
    base = tmp_path / "captioner"
    push_version(tiny_model(tmp_path_factory.getbasetemp()), base, 1)
    broken = push_version(tiny_model(tmp_path_factory.getbasetemp()), base, 2)
    (broken / "saved_model.pb").write_bytes(b"not a protobuf")
    with local_server(base) as url:  # a fresh start, as after a restart
        status, body, headers = predict(url, {"instances": [b64(GOOD)]})
        assert status == 200 and headers["X-Model-Version"] == "1"
        states = {s["version"]: s for s in request(url, MODEL)[1]["model_version_status"]}
        assert states["1"]["state"] == "AVAILABLE"
        assert states["2"]["state"] == "END" and states["2"]["status"]["error_message"]
        assert str(base) not in json.dumps(states)


def test_attention_signature_gives_each_word_its_weights_over_the_grid(tmp_path_factory, tmp_path):
    """What the page's heat map reads: for the default caption, per word its probability and a
    distribution over the grid cells (the tiny model's grid is its 16x16 input)."""
    push_version(tiny_model(tmp_path_factory.getbasetemp(), decoder="attention"), tmp_path / "models", 1)
    with local_server(tmp_path / "models") as url:
        images = [b64(GOOD), b64(OTHER)]
        status, body, _ = predict(url, {"signature_name": "attention", "instances": images})
        assert status == 200, body
        _, default, _ = predict(url, {"instances": images})
    for prediction, expected in zip(body["predictions"], default["predictions"]):
        words = [w for w in prediction["words"] if w]
        assert " ".join(words) == prediction["caption"] == expected["caption"]
        assert prediction["grid_size"] == [16, 16]
        for word, probability, weights in zip(prediction["words"], prediction["word_probabilities"], prediction["attention"]):
            assert len(weights) == 16 * 16
            if word:
                assert 0 < probability <= 1 and sum(weights) == pytest.approx(1.0, abs=1e-4)

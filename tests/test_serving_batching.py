"""The local server with --enable-batching against a real (tiny) exported model, over real HTTP.

Concurrent requests are joined into fewer graph calls (counted by the servable), every client
gets exactly the answer it gets from a server without batching, a bad image fails only the
request that sent it, a lone request waits for the batch timeout and no longer, and requests
over the batch size run on their own or are refused as TF Serving refuses them.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.images import grayscale_png, solid_rgb
from tests.serving_models import push_version, running_server, tiny_model

pytestmark = pytest.mark.e2e

PREDICT = "/v1/models/captioner:predict"
IMAGES = [solid_rgb(30 + 7 * i, 40 + 5 * i, rgb=(40 * i, 200 - 30 * i, 90)) for i in range(6)] + [grayscale_png(30, 20)]
JOIN_TIMEOUT_MICROS = 5_000_000  # long: a batch in these tests runs because it is full, never by the clock
LONE_TIMEOUT_MICROS = 400_000


def b64(data: bytes) -> dict:
    return {"b64": base64.b64encode(data).decode("ascii")}


def predict(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url + PREDICT, data=json.dumps(body).encode())
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def concurrently(url: str, bodies: list[dict]) -> list[tuple[int, dict]]:
    """Posts every body at once, one thread each; the answers in the bodies' order."""
    answers: list = [None] * len(bodies)

    def post(i: int) -> None:
        answers[i] = predict(url, bodies[i])

    threads = [threading.Thread(target=post, args=(i,)) for i in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return answers


def assert_same(ours, theirs) -> None:
    """The same JSON answer: strings, shapes and ints exactly, floats to float32 rounding."""
    if isinstance(theirs, dict):
        assert isinstance(ours, dict) and set(ours) == set(theirs)
        for key in theirs:
            assert_same(ours[key], theirs[key])
    elif isinstance(theirs, list):
        assert isinstance(ours, list) and len(ours) == len(theirs)
        for a, b in zip(ours, theirs):
            assert_same(a, b)
    elif isinstance(theirs, float):
        assert ours == pytest.approx(theirs, abs=1e-5)
    else:
        assert ours == theirs


def batching_file(directory: Path, **values) -> Path:
    path = directory / "batching.config"
    lines = []
    for name, value in values.items():
        if isinstance(value, bool):
            value = str(value).lower()
        lines.append(f"{name} {{ value: {value} }}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def model_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("batching_models") / "captioner"
    push_version(tiny_model(tmp_path_factory.getbasetemp(), decoder="attention"), base, 1)
    return base


@pytest.fixture(scope="module")
def alone(model_base: Path):
    """answer(body): what a server without batching answers (each request alone)."""
    with running_server(model_base) as server:
        cache: dict[str, tuple[int, dict]] = {}

        def answer(body: dict) -> tuple[int, dict]:
            key = json.dumps(body, sort_keys=True)
            if key not in cache:
                cache[key] = predict(server.url, body)
            return cache[key]

        yield answer


@pytest.fixture(scope="module")
def joining(model_base: Path, tmp_path_factory: pytest.TempPathFactory):
    """A batching server whose batches hold 4 images and run only when full (long timeout)."""
    config = batching_file(tmp_path_factory.mktemp("join"), max_batch_size=4, batch_timeout_micros=JOIN_TIMEOUT_MICROS,
                           num_batch_threads=1, max_enqueued_batches=8)
    with running_server(model_base, "--enable-batching", "--batching-parameters-file", str(config)) as server:
        yield server


def graph_calls(server) -> int:
    return server.versions.servable(None, None).graph_calls


def test_concurrent_requests_run_as_one_graph_call_per_signature_and_each_gets_its_own_answer(joining, alone):
    """Four images of serving_default (a request of two and two single ones) and four single
    beam_search requests, all at once: one full batch per signature, two graph calls in all."""
    default = [{"instances": [b64(IMAGES[0]), b64(IMAGES[1])]}, {"instances": [b64(IMAGES[2])]}, {"instances": [b64(IMAGES[6])]}]
    beam = [{"signature_name": "beam_search", "instances": [b64(image)]} for image in IMAGES[3:7]]
    before = graph_calls(joining)
    started = time.monotonic()
    answers = concurrently(joining.url, default + beam)
    elapsed = time.monotonic() - started
    assert graph_calls(joining) - before == 2
    assert elapsed < JOIN_TIMEOUT_MICROS / 1e6  # full batches ran at once, not at the timeout
    for body, (status, answer) in zip(default + beam, answers):
        assert status == 200, answer
        expected_status, expected = alone(body)
        assert expected_status == 200
        assert len(answer["predictions"]) == len(body["instances"])
        assert_same(answer, expected)


def test_attention_outputs_come_back_as_long_as_each_request_alone(joining, alone):
    """Words, their probabilities and the attention rows of each request: its own, cut back to
    its own caption length (a batch pads them to its longest caption)."""
    bodies = [{"signature_name": "attention", "instances": [b64(image)]} for image in IMAGES[:4]]
    before = graph_calls(joining)
    answers = concurrently(joining.url, bodies)
    assert graph_calls(joining) - before == 1
    for body, (status, answer) in zip(bodies, answers):
        assert status == 200, answer
        assert_same(answer, alone(body)[1])


def test_a_bad_image_fails_only_its_own_request_with_400(joining, alone):
    """The joined call fails on the bad image; the batch is run again request by request, so
    the three good requests get their captions and only the bad one its 400."""
    bodies = [{"instances": [b64(image)]} for image in IMAGES[:3]] + [{"instances": [b64(b"this is not an image")]}]
    before = graph_calls(joining)
    answers = concurrently(joining.url, bodies)
    assert graph_calls(joining) - before == 1 + 4  # the batch, then each request on its own
    for body, (status, answer) in zip(bodies[:3], answers[:3]):
        assert status == 200, answer
        assert_same(answer, alone(body)[1])
    status, answer = answers[3]
    assert status == 400 and "Unknown image file format" in answer["error"]


def test_a_lone_request_waits_for_the_timeout_and_big_requests_run_on_their_own(model_base, tmp_path, alone):
    """A request alone in its batch runs batch_timeout_micros after it arrived (plus its run);
    one larger than a batch is split into batches and never waits; one over max_batch_size
    gets TF Serving's 400."""
    config = batching_file(tmp_path, max_batch_size=6, batch_timeout_micros=LONE_TIMEOUT_MICROS, num_batch_threads=1,
                           enable_large_batch_splitting=True, max_execution_batch_size=2)
    lone = {"instances": [b64(IMAGES[0])]}
    big = {"instances": [b64(image) for image in IMAGES[:5]]}
    with running_server(model_base, "--enable-batching", "--batching-parameters-file", str(config)) as server:
        timings = []
        for _ in range(2):
            started = time.monotonic()
            status, answer = predict(server.url, lone)
            timings.append(time.monotonic() - started)
            assert status == 200, answer
            assert_same(answer, alone(lone)[1])
        timeout = LONE_TIMEOUT_MICROS / 1e6
        assert all(timeout <= t < timeout + 1.0 for t in timings), timings  # the tiny model runs in milliseconds

        before = graph_calls(server)
        started = time.monotonic()
        status, answer = predict(server.url, big)
        assert status == 200, answer
        assert time.monotonic() - started < timeout
        assert graph_calls(server) - before == 3  # 5 images in calls of at most 2
        assert_same(answer, alone(big)[1])

        status, answer = predict(server.url, {"instances": [b64(IMAGES[0])] * 7})
        assert status == 400 and answer["error"] == "Task size 7 is larger than maximum input batch size 6"

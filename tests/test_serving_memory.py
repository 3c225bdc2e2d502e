"""A memory bound the local server keeps under a bounded stream of hostile requests.

`python -m serving.local_server` runs as its own process with the tiny captioner on the
real EfficientNet-Lite0 network (tests/serving_models.py), so its resident memory
(VmRSS in /proc/<pid>/status, sampled throughout) is the served Lite graph's. The stream
mixes decompression bombs, a JPEG that lies about its size, a many-frame GIF, a legal
image just under the pixel budget, a 256-image batch (run as graph calls of at most 32, the
server's --max-execution-batch-size) and requests whose headers lie; each
gets its 4xx or its answer, memory grows by less than GROWTH_LIMIT_MB over what the warmed
server held before the stream, and a good request is answered afterwards about as fast as
before. The bound is on growth, not on the total, because what a warmed TensorFlow process
holds at rest depends on the CPU (about 1.0 GB on one machine kind here, 3.2 GB on an AVX-512
EPYC); the growth is what hostile input could add. Loopback only.
"""

from __future__ import annotations

import base64
import json
import socket
import statistics
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.images import animated_gif, jpeg_claiming, png_bomb, solid_rgb
from tests.serving_models import lite_model, local_server_process, push_version

pytestmark = pytest.mark.e2e

GROWTH_LIMIT_MB = 1000  # the README states this bound for the Lite models
MODEL = "/v1/models/captioner"
BODY_TIMEOUT = 2


def b64(data: bytes) -> dict:
    return {"b64": base64.b64encode(data).decode("ascii")}


def vm_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


class PeakRss(threading.Thread):
    """Samples a process's VmRSS every 50 ms until stopped; `peak` is the largest seen,
    `take()` the largest since the previous take."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peak, self._recent, self._stop_event = pid, 0.0, 0.0, threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            rss = vm_rss_mb(self.pid)
            self.peak, self._recent = max(self.peak, rss), max(self._recent, rss)
            time.sleep(0.05)

    def take(self) -> float:
        time.sleep(0.1)
        recent, self._recent = self._recent, 0.0
        return recent

    def stop(self) -> float:
        self._stop_event.set()
        self.join()
        return self.peak


def post(url: str, body: dict) -> tuple[int, str]:
    request = urllib.request.Request(url + f"{MODEL}:predict", data=json.dumps(body).encode())
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def raw(url: str, data: bytes) -> int:
    """Sends raw bytes, returns the status code of the answer."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=BODY_TIMEOUT + 10) as sock:
        sock.sendall(data)
        reply = sock.recv(4096)
    return int(reply.split()[1])


def good_latency(url: str, body: dict, times: int = 5) -> float:
    seconds = []
    for _ in range(times):
        started = time.perf_counter()
        status, text = post(url, body)
        seconds.append(time.perf_counter() - started)
        assert status == 200, text
    return statistics.median(seconds)


def test_memory_stays_bounded_and_good_requests_stay_fast_under_hostile_input(tmp_path_factory, tmp_path):
    base = tmp_path / "captioner"
    push_version(lite_model(tmp_path_factory.getbasetemp()), base, 1)
    good = {"instances": [b64(solid_rgb(375, 500))]}
    head = f"POST {MODEL}:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    hostile = [
        ("two PNG bombs of 23000x23000", lambda url: post(url, {"instances": [b64(png_bomb())] * 2})[0], 400),
        ("a JPEG claiming 13000x13000", lambda url: post(url, {"instances": [b64(jpeg_claiming(13_000, 13_000))]})[0], 400),
        ("a GIF of 300 frames", lambda url: post(url, {"instances": [b64(animated_gif(300, 100))]})[0], 200),
        ("a 1-bit PNG of 6300x6300 (just under the budget)", lambda url: post(url, {"instances": [b64(png_bomb(6300, 6300))]})[0], 200),
        ("a batch of 256 images", lambda url: post(url, {"instances": [b64(solid_rgb(224, 224))] * 256})[0], 200),
        ("a body shorter than its Content-Length", lambda url: raw(url, (head + "Content-Length: 1000\r\n\r\n{").encode()), 408),
        ("two Content-Lengths", lambda url: raw(url, (head + "Content-Length: 2\r\nContent-Length: 9\r\n\r\n{}").encode()), 400),
        ("a Content-Length of \u00b2", lambda url: raw(url, (head + "Content-Length: \u00b2\r\n\r\n{}").encode("utf-8")), 400),
    ]
    log = tmp_path / "server.log"
    with local_server_process(base, log, "--body-timeout", str(BODY_TIMEOUT), wait_seconds=600, with_pid=True) as (url, pid):
        before = good_latency(url, good)
        warmed = vm_rss_mb(pid)
        sampler = PeakRss(pid)
        sampler.start()
        peaks: dict[str, list[float]] = {name: [] for name, _, _ in hostile}
        try:
            for _ in range(2):
                for name, send, expected in hostile:
                    assert send(url) == expected, name
                    assert post(url, good)[0] == 200, f"no answer to a good request after {name}"
                    peaks[name].append(sampler.take())
        finally:
            peak = sampler.stop()
        print(f"\npeak VmRSS per pass (warmed: {warmed:.0f} MB)")
        print("\n".join(f"{' '.join(f'{rss:6.0f} MB' for rss in passes)}  {name}" for name, passes in peaks.items()))
        after = good_latency(url, good)
        print(f"\nwarmed VmRSS {warmed:.0f} MB, peak {peak:.0f} MB: grew {peak - warmed:.0f} MB "
              f"(limit {GROWTH_LIMIT_MB}); good request {before * 1000:.0f} ms before, "
              f"{after * 1000:.0f} ms after; now {vm_rss_mb(pid):.0f} MB")
    assert peak - warmed < GROWTH_LIMIT_MB
    assert after < max(3 * before, before + 0.5)

"""A bounded load test of a caption server's REST API (TF Serving or serving/local_server.py).

Run `python -m bench.serving_load --url http://127.0.0.1:8501 --clients 8 --seconds 60`.
N client threads on this machine each keep one HTTP/1.1 connection and post predict
requests back to back (row format, `--batch` base64 images each) until the time is up or
`--max-requests` have been sent in all; the count, the time and the clients are capped.
Reports requests by outcome, checks that there was no 5xx (and no dropped connection),
latency percentiles and images/s; exits 1 when the check fails. The last line is JSON.
Images: the first `--images` directory's *.jpg files, else synthetic shape pictures.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import sys
import threading
import time
from pathlib import Path
from typing import Sequence
from urllib.parse import urlsplit

MAX_CLIENTS, MAX_SECONDS, MAX_REQUESTS = 64, 600, 1_000_000


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.serving_load", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8501", help="server (default http://127.0.0.1:8501)")
    parser.add_argument("--model", default="captioner", help="model name (default captioner)")
    parser.add_argument("--clients", type=int, default=8, help=f"concurrent clients, 1..{MAX_CLIENTS} (default 8)")
    parser.add_argument("--seconds", type=float, default=60, help=f"duration, up to {MAX_SECONDS} (default 60)")
    parser.add_argument("--max-requests", type=int, default=100_000, help="stop after this many requests in all (default 100000)")
    parser.add_argument("--batch", type=int, default=1, help="images per request (default 1)")
    parser.add_argument("--signature", default=None, help="signature_name (default: the server's serving_default)")
    parser.add_argument("--images", type=Path, default=None, help="directory of .jpg images (default: 32 synthetic ones)")
    parser.add_argument("--timeout", type=float, default=120, help="seconds per request before it counts as failed")
    return parser


def load_images(directory: Path | None, count: int = 32) -> list[bytes]:
    if directory is not None:
        files = sorted(directory.glob("*.jpg"))[:count]
        if not files:
            raise SystemExit(f"error: no .jpg files in {directory}")
        return [f.read_bytes() for f in files]
    from data.synthetic import SyntheticConfig, draw, encode_jpeg, plan_dataset

    return [encode_jpeg(draw(r.attributes, r.size)) for r in plan_dataset(SyntheticConfig(num_images=count, seed=7))]


def request_bodies(images: list[bytes], batch: int, signature: str | None) -> list[bytes]:
    """Pre-encoded predict bodies, cycling through the images, so clients spend no time encoding."""
    bodies = []
    for start in range(0, len(images), batch):
        chunk = [images[(start + i) % len(images)] for i in range(batch)]
        body: dict = {"instances": [{"b64": base64.b64encode(image).decode("ascii")} for image in chunk]}
        if signature:
            body["signature_name"] = signature
        bodies.append(json.dumps(body).encode())
    return bodies


class Tally:
    def __init__(self, max_requests: int):
        self.lock = threading.Lock()
        self.latencies: list[float] = []
        self.statuses: dict[str, int] = {}
        self.started = 0
        self.max_requests = max_requests

    def claim(self) -> bool:
        with self.lock:
            if self.started >= self.max_requests:
                return False
            self.started += 1
            return True

    def record(self, outcome: str, seconds: float | None) -> None:
        with self.lock:
            self.statuses[outcome] = self.statuses.get(outcome, 0) + 1
            if seconds is not None:
                self.latencies.append(seconds)


def client(url: str, path: str, bodies: list[bytes], offset: int, deadline: float, tally: Tally, timeout: float) -> None:
    parts = urlsplit(url)
    connection_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    connection = connection_class(parts.hostname, parts.port, timeout=timeout)
    i = offset
    while time.monotonic() < deadline and tally.claim():
        body = bodies[i % len(bodies)]
        i += 1
        started = time.perf_counter()
        try:
            connection.request("POST", path, body=body, headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            tally.record(str(response.status), time.perf_counter() - started)
            if response.getheader("Connection", "").lower() == "close":
                connection.close()
        except (OSError, http.client.HTTPException) as error:
            tally.record(f"connection error ({type(error).__name__})", None)
            connection.close()
    connection.close()


def percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    rank = max(0, min(len(sorted_values) - 1, round(q / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[rank]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not (1 <= args.clients <= MAX_CLIENTS and 0 < args.seconds <= MAX_SECONDS and 1 <= args.max_requests <= MAX_REQUESTS):
        print(f"error: need 1 <= --clients <= {MAX_CLIENTS}, 0 < --seconds <= {MAX_SECONDS}, "
              f"1 <= --max-requests <= {MAX_REQUESTS}", file=sys.stderr)
        return 2
    path = f"/v1/models/{args.model}:predict"
    bodies = request_bodies(load_images(args.images), args.batch, args.signature)

    warmup = Tally(1)  # one request first: a clear error when nothing answers, and a warm server
    client(args.url, path, bodies, 0, time.monotonic() + args.timeout, warmup, args.timeout)
    if "200" not in warmup.statuses:
        print(f"error: the warm-up request to {args.url}{path} failed: {warmup.statuses}", file=sys.stderr)
        return 2

    tally = Tally(args.max_requests)
    deadline = time.monotonic() + args.seconds
    threads = [
        threading.Thread(target=client, args=(args.url, path, bodies, k * 7, deadline, tally, args.timeout))
        for k in range(args.clients)
    ]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started

    latencies = sorted(tally.latencies)
    total = sum(tally.statuses.values())
    ok = tally.statuses.get("200", 0)
    server_errors = sum(n for s, n in tally.statuses.items() if s.startswith("5"))
    dropped = sum(n for s, n in tally.statuses.items() if s.startswith("connection"))
    summary = {
        "url": args.url, "clients": args.clients, "seconds": round(elapsed, 1), "batch": args.batch,
        "signature": args.signature or "serving_default", "requests": total, "ok": ok, "statuses": tally.statuses,
        "server_errors_5xx": server_errors, "connection_errors": dropped,
        "p50_ms": round(percentile(latencies, 50) * 1000, 1), "p90_ms": round(percentile(latencies, 90) * 1000, 1),
        "p99_ms": round(percentile(latencies, 99) * 1000, 1), "max_ms": round((latencies[-1] if latencies else float("nan")) * 1000, 1),
        "requests_per_s": round(total / elapsed, 2), "images_per_s": round(ok * args.batch / elapsed, 2),
    }
    print(f"{args.clients} clients x {elapsed:.1f} s against {args.url} (batch {args.batch}, {summary['signature']})")
    print(f"  requests       {total} ({', '.join(f'{s}: {n}' for s, n in sorted(tally.statuses.items()))})")
    print(f"  zero 5xx       {'yes' if not server_errors else f'NO ({server_errors})'}; dropped connections: {dropped}")
    print(f"  latency        p50 {summary['p50_ms']} ms, p90 {summary['p90_ms']} ms, p99 {summary['p99_ms']} ms, max {summary['max_ms']} ms")
    print(f"  throughput     {summary['requests_per_s']} requests/s, {summary['images_per_s']} images/s")
    print(json.dumps(summary))
    return 0 if not server_errors and not dropped and ok == total else 1


if __name__ == "__main__":
    sys.exit(main())

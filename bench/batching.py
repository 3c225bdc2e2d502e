"""Server-side batching: the local server with and without it against the bare batched signature.

Run `python -m bench.batching --model-base serving/models/captioner [--images DIR]`.
Three sides, on the same photos (single full-size JPEGs), measured in one run:

  bare       the newest version's signature called directly in this process on batches of the
             batching file's batch size (no HTTP, no queue): the throughput batching aims at.
             Run before and after the servers; the ratio uses the mean of the two.
  batching   `python -m serving.local_server --enable-batching --batching-parameters-file FILE`
             as a subprocess; --clients threads here each post one image per request, back to
             back, over keep-alive connections.
  plain      the same server and clients without batching (each request its own graph call).

Each server then gets one client alone for a few seconds: its p50 shows what waiting for the
batch timeout costs a request that has no batch mates.

Reported per side: images/s, latency p50/p99/max; for the batching server also the longest
time a request waited in the queue (from the server's access log) against the batch timeout
plus one batch's run time, and the mean batch. Every served caption is compared with the
bare signature's caption of that photo. Goals: batching >= 0.8x bare, its p99 <= 2x its p50,
no wait over timeout + a batch's run. The last line is JSON. Only this machine's load from
other work, printed as the load average before and after, is not controlled.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Sequence

from bench.serving_load import percentile
from serving import batching_parameters

REPO = Path(__file__).resolve().parent.parent
DEFAULT_IMAGES = REPO.parent / "shared" / "flickr8k-fullsize-dev"
PREDICT = "/v1/models/captioner:predict"
_QUEUED = re.compile(r'"POST [^"]*" 200 ([0-9.]+) ms \(batch of (\d+) image\(s\) from (\d+) request\(s\), queued ([0-9.]+) ms\)')
GOAL_RATIO, GOAL_TAIL = 0.8, 2.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.batching", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-base", type=Path, default=REPO / "serving" / "models" / "captioner",
                        help="directory of numeric versions; the newest is served (default serving/models/captioner)")
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help=f"directory of .jpg photos (default {DEFAULT_IMAGES})")
    parser.add_argument("--batching-config", type=Path, default=REPO / "serving" / "batching.config",
                        help="batching parameters file (default serving/batching.config)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    parser.add_argument("--seconds", type=float, default=40, help="timed seconds per server (default 40)")
    parser.add_argument("--bare-seconds", type=float, default=20, help="timed seconds per bare run (default 20)")
    parser.add_argument("--lone-seconds", type=float, default=5,
                        help="then one client alone on each server: what the timeout costs it (default 5)")
    parser.add_argument("--warmup-seconds", type=float, default=5, help="untimed load on each server first (default 5)")
    parser.add_argument("--signature", default="serving_default", help="signature (default serving_default)")
    return parser


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# ---------------------------------------------------------------------------- bare signature


def bare_run(fn, images: list[bytes], batch: int, seconds: float) -> dict:
    """Back-to-back calls on batches of `batch` photos (cycling through them) for `seconds`."""
    import tensorflow as tf

    done, calls, times, start = 0, 0, [], 0
    began = time.perf_counter()
    while time.perf_counter() - began < seconds:
        chunk = [images[(start + i) % len(images)] for i in range(batch)]
        start = (start + batch) % len(images)
        t = time.perf_counter()
        fn(images=tf.constant(chunk))
        times.append(time.perf_counter() - t)
        done, calls = done + batch, calls + 1
    elapsed = time.perf_counter() - began
    return {"images_per_s": round(done / elapsed, 2), "calls": calls, "batch": batch,
            "call_p50_ms": round(statistics.median(times) * 1000, 1), "call_max_ms": round(max(times) * 1000, 1)}


def bare_captions(fn, images: list[bytes], batch: int) -> list[str]:
    import tensorflow as tf

    captions = []
    for start in range(0, len(images), batch):
        out = fn(images=tf.constant(images[start : start + batch]))
        captions.extend(c.decode() for c in out["caption"].numpy())
    return captions


# ---------------------------------------------------------------------------- servers and clients


class Server:
    """serving.local_server as a subprocess on a free port, its log in a file."""

    def __init__(self, model_base: Path, extra: list[str], log_path: Path):
        self.log_path = log_path
        command = [sys.executable, "-m", "serving.local_server", "--model-base", str(model_base), "--port", "0", *extra]
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        deadline, self.url = time.monotonic() + 300, None
        while time.monotonic() < deadline:
            text = log_path.read_text(errors="replace")
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}:\n{text}")
            found = re.search(r"on (http://127\.0\.0\.1:\d+)/v1/models/", text)
            if found and "AVAILABLE" in text:
                self.url = found.group(1)
                return
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"no version became AVAILABLE:\n{log_path.read_text()}")

    def log_offset(self) -> int:
        return self.log_path.stat().st_size

    def log_since(self, offset: int) -> str:
        with open(self.log_path, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def load(url: str, bodies: list[bytes], clients: int, seconds: float, signature: str) -> tuple[float, list]:
    """`clients` threads posting one-image bodies back to back; (elapsed, [(latency, index, status, caption)])."""
    host, port = url.removeprefix("http://").split(":")
    records, lock = [], threading.Lock()
    deadline = time.monotonic() + seconds

    def client(k: int) -> None:
        connection = http.client.HTTPConnection(host, int(port), timeout=120)
        i = k * (len(bodies) // clients)
        while time.monotonic() < deadline:
            index = i % len(bodies)
            i += 1
            started = time.perf_counter()
            try:
                connection.request("POST", PREDICT, body=bodies[index], headers={"Content-Type": "application/json"})
                response = connection.getresponse()
                data = response.read()
                latency, status = time.perf_counter() - started, response.status
                caption = json.loads(data)["predictions"][0]["caption"] if status == 200 else None
            except (OSError, http.client.HTTPException) as error:
                latency, status, caption = None, f"connection error ({type(error).__name__})", None
                connection.close()
            with lock:
                records.append((latency, index, status, caption))
        connection.close()

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - began, records


def summarize(elapsed: float, records: list, captions: list[str]) -> dict:
    ok = [r for r in records if r[2] == 200]
    latencies = sorted(r[0] for r in ok)
    return {
        "requests": len(records), "ok": len(ok), "failed": len(records) - len(ok),
        "images_per_s": round(len(ok) / elapsed, 2),
        "p50_ms": round(percentile(latencies, 50) * 1000, 1), "p99_ms": round(percentile(latencies, 99) * 1000, 1),
        "max_ms": round(latencies[-1] * 1000, 1) if latencies else None,
        "captions_as_bare": f"{sum(r[3] == captions[r[1]] for r in ok)}/{len(ok)}",
    }


def serve_and_load(args, extra: list[str], bodies: list[bytes], captions: list[str], workdir: Path, name: str) -> tuple[dict, str]:
    server = Server(args.model_base, extra, workdir / f"{name}.log")
    try:
        load(server.url, bodies, args.clients, args.warmup_seconds, args.signature)  # warm: every batch size seen
        offset = server.log_offset()
        elapsed, records = load(server.url, bodies, args.clients, args.seconds, args.signature)
        summary, log_text = summarize(elapsed, records, captions), server.log_since(offset)
        elapsed, records = load(server.url, bodies, 1, args.lone_seconds, args.signature)
        summary["lone_client_p50_ms"] = summarize(elapsed, records, captions)["p50_ms"]
        return summary, log_text
    finally:
        server.stop()


def queue_figures(log_text: str) -> dict:
    """From the batching server's access log: the longest queue wait, the mean batch, and the
    run time of a batch as each request saw it (its time in the server less its wait)."""
    rows = [(float(total), int(images), float(queued)) for total, images, _, queued in _QUEUED.findall(log_text)]
    if not rows:
        return {}
    runs = sorted(total - queued for total, _, queued in rows)
    return {
        "max_wait_ms": round(max(q for _, _, q in rows), 1),
        "mean_batch_images": round(statistics.mean(i for _, i, _ in rows), 2),
        "batch_run_p50_ms": round(percentile(runs, 50), 1), "batch_run_max_ms": round(runs[-1], 1),
    }


# ---------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    params = batching_parameters.read(args.batching_config)
    paths = sorted(args.images.glob("*.jpg"))
    if not paths:
        print(f"error: no .jpg photos in {args.images}", file=sys.stderr)
        return 2
    images = [p.read_bytes() for p in paths]
    body = lambda image: {"instances": [{"b64": base64.b64encode(image).decode("ascii")}],  # noqa: E731
                          **({"signature_name": args.signature} if args.signature != "serving_default" else {})}
    bodies = [json.dumps(body(image)).encode() for image in images]
    versions = sorted((p for p in args.model_base.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    batch = params.execution_batch_size
    load_before = load_average()
    print(f"{len(images)} photos from {args.images}; model {versions[-1]}; {params.describe()}")
    print(f"load average before: {load_before}")

    import tensorflow as tf

    fn = tf.saved_model.load(str(versions[-1])).signatures[args.signature]
    for size in sorted({1, batch}):
        fn(images=tf.constant(images[:size]))  # warm-up of each batch shape
    captions = bare_captions(fn, images, batch)
    bare = [bare_run(fn, images, batch, args.bare_seconds)]
    print(f"  bare, batches of {batch}: {bare[0]['images_per_s']} images/s (call p50 {bare[0]['call_p50_ms']} ms)")

    with tempfile.TemporaryDirectory(prefix="bench-batching-") as tmp:
        workdir = Path(tmp)
        batched, log_text = serve_and_load(args, ["--enable-batching", "--batching-parameters-file", str(args.batching_config)],
                                           bodies, captions, workdir, "batching")
        batched.update(queue_figures(log_text))
        print(f"  server with batching: {batched}")
        plain, _ = serve_and_load(args, [], bodies, captions, workdir, "plain")
        print(f"  server without batching: {plain}")

    bare.append(bare_run(fn, images, batch, args.bare_seconds))
    print(f"  bare again: {bare[1]['images_per_s']} images/s")
    load_after = load_average()
    bare_mean = statistics.mean(b["images_per_s"] for b in bare)
    ratio = batched["images_per_s"] / bare_mean
    timeout_ms = params.batch_timeout_micros / 1000
    wait_bound = timeout_ms + batched.get("batch_run_max_ms", float("nan"))
    goals = {
        "throughput": ratio >= GOAL_RATIO,
        "tail": batched["p99_ms"] <= GOAL_TAIL * batched["p50_ms"],
        "wait": batched.get("max_wait_ms", float("inf")) <= wait_bound,
    }
    print(f"{args.clients} clients, {args.seconds:g} s a server, load average before {load_before}, after {load_after}")
    print(f"  bare batched       {bare_mean:.2f} images/s (runs {bare[0]['images_per_s']}, {bare[1]['images_per_s']})")
    print(f"  with batching      {batched['images_per_s']} images/s, p50 {batched['p50_ms']} ms, p99 {batched['p99_ms']} ms, "
          f"max {batched['max_ms']} ms; captions as bare {batched['captions_as_bare']}; one client alone: p50 "
          f"{batched['lone_client_p50_ms']} ms")
    print(f"  without batching   {plain['images_per_s']} images/s, p50 {plain['p50_ms']} ms, p99 {plain['p99_ms']} ms, "
          f"max {plain['max_ms']} ms; captions as bare {plain['captions_as_bare']}; one client alone: p50 "
          f"{plain['lone_client_p50_ms']} ms")
    print(f"  batched / bare     {ratio:.2f} (goal >= {GOAL_RATIO}): {'met' if goals['throughput'] else 'NOT met'}")
    print(f"  p99 / p50          {batched['p99_ms'] / batched['p50_ms']:.2f} (goal <= {GOAL_TAIL:g}): {'met' if goals['tail'] else 'NOT met'}")
    print(f"  longest wait       {batched.get('max_wait_ms')} ms vs timeout {timeout_ms:g} ms + a batch's run "
          f"{batched.get('batch_run_max_ms')} ms (p50 {batched.get('batch_run_p50_ms')} ms): {'met' if goals['wait'] else 'NOT met'}")
    print(json.dumps({"bare": bare, "batching": batched, "plain": plain, "ratio": round(ratio, 3),
                      "batched_over_plain": round(batched["images_per_s"] / plain["images_per_s"], 3),
                      "goals": goals, "load_before": load_before, "load_after": load_after,
                      "clients": args.clients, "parameters": str(args.batching_config)}))
    return 0 if batched["failed"] == 0 and plain["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

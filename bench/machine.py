"""What the machine itself can do, measured in the benchmark's own process: memory
bandwidth and float32 matmul rate. The floors and shares the benchmarks report
(bench/decoding.py, bench/training.py) are against these figures."""

from __future__ import annotations

import time


def best_seconds(fn, runs: int) -> float:
    """The fastest of `runs` calls of `fn`, in seconds."""
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def memory_bandwidth_gbs() -> float:
    """GB/s of a 256 MiB numpy copy (read + write counted), best of 5."""
    import numpy as np

    source = np.ones(256 * 2**20 // 8)
    target = np.empty_like(source)
    return 2 * source.nbytes / best_seconds(lambda: np.copyto(target, source), 5) / 1e9


def matmul_gflops(rows: int, inner: int, cols: int, repeats: int = 200) -> float:
    """GFLOP/s of a [rows, inner] x [inner, cols] float32 matmul, `repeats` of them in one
    tf.function loop, best of 3 (after a first call that traces it)."""
    import tensorflow as tf

    a, b = tf.random.normal([rows, inner]), tf.random.normal([inner, cols])

    @tf.function
    def many():
        total = tf.zeros([rows, cols])
        for _ in tf.range(repeats):
            total += tf.matmul(a, b)
        return total

    many()
    return 2 * rows * inner * cols * repeats / best_seconds(lambda: many().numpy(), 3) / 1e9

"""Training throughput: captions a second against the machine's matmul rate, with and without XLA.

Run `python -m bench.training [--profile flickr8k_lite0] [--steps 40] [--vocab 2531]
[--history HISTORY.json --train-captions 30000]`. One process, the profile's own decoder,
optimizer, loss and batch size (models/trainer.build_model), on batches of the shapes the
Trainer feeds (the backbone's grid, captions of text.max_length tokens; random values: the
speed of a step does not depend on them), side by side:

  as shipped   model.compile as the Trainer does (TensorFlow graph, no XLA);
  XLA          the same with `jit_compile=True`.

Each variant runs one untimed epoch of `--steps` steps (tracing, compilation) and then a
timed one. The work of one caption is counted from the model's sizes: multiply-adds of the
image encoding (annotations, attention keys, initial state) and of every position's step
(attention, gate, LSTM, deep output, logits), times 2 for FLOPs and times 3 for forward plus
backward. The share of the machine is that against a large float32 matmul measured here
(1024 x 1024 x 1024) and against a matmul of the LSTM's own training shape. With
--history, the epochs of a real training are reported as captions a second too. The last
line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from bench.machine import matmul_gflops


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.training", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="flickr8k_lite0", help="the profile whose decoder and training settings to use")
    parser.add_argument("--steps", type=int, default=40, help="timed training steps per variant (default 40)")
    parser.add_argument("--vocab", type=int, default=2531, help="vocabulary size (default 2531, the Flickr8k run's)")
    parser.add_argument("--history", type=Path, help="a Trainer's history.json, to report its epochs as captions/s")
    parser.add_argument("--train-captions", type=int, default=30000, help="captions in that training's train split")
    return parser


def caption_macs(model, grid_cells: int, channels: int, positions: int) -> int:
    """Multiply-adds of one caption's forward pass through the attention decoder."""
    e, h, a, v = model.embedding_dim, model.hidden_dim, model.attention_dim, model.vocab_size
    encode = grid_cells * channels * h + grid_cells * h * a + 2 * h * h
    step = (h * a + grid_cells * a + grid_cells * a + grid_cells * h  # query, keys + query, score, context
            + h * h  # context gate
            + (e + h) * 4 * h + h * 4 * h  # LSTM kernel and recurrent kernel
            + 2 * h * e + e * v)  # deep output, logits
    return encode + positions * step


def timed_training(cfg, vocab: int, grid: tuple[int, int, int], steps: int, jit: bool):
    """(seconds a step of the second epoch, the model); the first epoch traces and compiles."""
    import keras
    import tensorflow as tf

    from models.trainer import build_model

    keras.utils.set_random_seed(cfg.train.seed)
    model = build_model(vocab, cfg)
    if jit:
        model.compile(optimizer=model.optimizer, loss=model.loss, weighted_metrics=[
            keras.metrics.SparseCategoricalAccuracy(name="accuracy")], jit_compile=True)
    batch, length = cfg.train.batch_size, cfg.text.max_length
    h, w, c = grid
    tokens = tf.random.uniform([batch, length], 1, vocab, dtype=tf.int64)
    inputs = {"image_grid": tf.random.normal([batch, h * w, c]), "tokens": tokens[:, :-1]}
    data = tf.data.Dataset.from_tensors((inputs, tokens[:, 1:], tf.ones([batch, length - 1]))).repeat()

    class EpochTimer(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.seconds: list[float] = []

        def on_epoch_begin(self, epoch, logs=None):
            self._started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self._started)

    timer = EpochTimer()
    model.fit(data, epochs=2, steps_per_epoch=steps, verbose=0, callbacks=[timer])
    return timer.seconds[1] / steps, model


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from configs import load_config
    from configs.config import TrainerSections
    from models.backbones import get_backbone

    cfg = TrainerSections.of(load_config(args.profile))
    if cfg.model.architecture != "attention":
        raise SystemExit("error: the FLOP count covers the attention decoder (every Flickr8k profile) only")
    grid = get_backbone(cfg.features.backbone, weights=None).grid_shape
    batch, positions = cfg.train.batch_size, cfg.text.max_length - 1
    print(f"profile {args.profile}: batch {batch}, {positions} positions, grid {grid}, vocabulary {args.vocab}; "
          f"load average {os.getloadavg()[0]:.2f}")
    peak = matmul_gflops(1024, 1024, 1024, repeats=20)
    lstm_shape = matmul_gflops(batch, cfg.model.embedding_dim + cfg.model.hidden_dim, 4 * cfg.model.hidden_dim, repeats=200)
    print(f"matmul: {peak:.0f} GFLOP/s at 1024^3, {lstm_shape:.0f} GFLOP/s at the LSTM's training shape "
          f"[{batch}, {cfg.model.embedding_dim + cfg.model.hidden_dim}] x [.., {4 * cfg.model.hidden_dim}]")
    result = {"profile": args.profile, "batch": batch, "peak_gflops": round(peak, 1),
              "lstm_shape_gflops": round(lstm_shape, 1), "variants": {}}
    flops_per_caption = None
    for name, jit in (("as shipped", False), ("XLA", True)):
        seconds, model = timed_training(cfg, args.vocab, grid, args.steps, jit)
        if flops_per_caption is None:
            flops_per_caption = 6 * caption_macs(model, grid[0] * grid[1], grid[2], positions)
        rate = batch / seconds
        achieved = rate * flops_per_caption / 1e9
        result["variants"][name] = {"step_ms": round(1000 * seconds, 1), "captions_per_s": round(rate, 1),
                                    "gflops": round(achieved, 1), "share_of_peak": round(achieved / peak, 3)}
        print(f"{name:11s} {1000 * seconds:7.1f} ms a step = {rate:6.1f} captions/s = {achieved:5.1f} GFLOP/s "
              f"({achieved / peak:.0%} of the 1024^3 matmul, {achieved / lstm_shape:.0%} of the LSTM-shaped one)")
    result["gflop_per_caption"] = round(flops_per_caption / 1e9, 3)
    shipped, xla = result["variants"]["as shipped"], result["variants"]["XLA"]
    result["xla_speedup"] = round(xla["captions_per_s"] / shipped["captions_per_s"], 3)
    print(f"{flops_per_caption / 1e9:.3f} GFLOP a caption (forward and backward); XLA / as shipped: {result['xla_speedup']:.2f}x")
    if args.history:
        history = json.loads(args.history.read_text())
        per_epoch = [round(args.train_captions / s, 1) for s in history.get("epoch_seconds", [])]
        result["history_captions_per_s"] = per_epoch
        print(f"{args.history}: {per_epoch} captions/s per epoch (train and evaluation of each epoch, "
              f"{args.train_captions} train captions)")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

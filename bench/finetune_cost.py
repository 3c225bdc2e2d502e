"""What would fine-tuning the backbone cost per epoch? Forward plus backward of its layers, on 2 cores.

Run `python -m bench.finetune_cost [--backbone efficientnet_lite0] [--batch 32]
[--cut 11 --cut 15] [--train-images 6000]`. The papers above this project's quality fine-tune
their CNN; this measures what that costs here before anything is built, in one process:

  frozen         the backbone's forward pass, as the feature step runs it today;
  all layers     forward and backward through every layer (end-to-end fine-tuning; the
                 Trainer would decode and resize the images every epoch too, not counted);
  from block N   forward and backward through blocks N.. and the head only, from the map
                 that enters block N (what the feature step would store instead of the
                 grid; its size is printed against the grid's).

BatchNormalization runs in inference mode (its statistics frozen, as fine-tuning with small
batches does), the loss is a stand-in (the mean square of the grid): the cost of a step does
not depend on it. Random inputs of the real shapes. Each side runs twice untimed, then
`--repeats` timed batches. The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.finetune_cost", description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="efficientnet_lite0", help="an EfficientNet-Lite backbone (default Lite0)")
    parser.add_argument("--batch", type=int, default=32, help="images a training step (default 32)")
    parser.add_argument("--cut", type=int, action="append", help="fine-tune from this block on (repeatable; default 11 and 15)")
    parser.add_argument("--train-images", type=int, default=6000, help="images an epoch (default 6000, Flickr8k's train split)")
    parser.add_argument("--repeats", type=int, default=5, help="timed batches a side (default 5)")
    return parser


def seconds_per_batch(step, repeats: int) -> float:
    step(), step()  # tracing, first allocations
    started = time.perf_counter()
    for _ in range(repeats):
        step()
    return (time.perf_counter() - started) / repeats


def backward_step(model, inputs):
    """A tf.function: the gradient of a stand-in loss on model(inputs)'s grid w.r.t. its weights."""
    import tensorflow as tf

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            out = model(inputs, training=False)
            grid = out["grid"] if isinstance(out, dict) else out
            loss = tf.reduce_mean(tf.square(grid))
        return tape.gradient(loss, model.trainable_variables)

    return step


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    from models.backbones.efficientnet_lite import build_feature_model, split_at_block

    model = build_feature_model(args.backbone, weights=None)
    size = model.input_shape[1]
    grid_floats = math.prod(model.output["grid"].shape[1:])
    images = tf.random.uniform([args.batch, size, size, 3], 0, 255)
    rows = []

    def report(side: str, step, stored: str, params: int) -> None:
        per_batch = seconds_per_batch(step, args.repeats)
        rate = args.batch / per_batch
        rows.append({"side": side, "images_per_s": round(rate, 1), "epoch_min": round(args.train_images / rate / 60, 2),
                     "stored_input": stored, "trained_params": params})
        print(f"{side:<16} {rate:7.1f} images/s  {args.train_images / rate / 60:6.2f} min an epoch of "
              f"{args.train_images} images  (input {stored}; {params:,} weights trained)")

    print(f"{args.backbone}, {size}x{size} images, batch {args.batch}; the grid it stores today: {grid_floats:,} floats an image")
    report("frozen", tf.function(lambda: model(images, training=False)["grid"]), "images", 0)
    report("all layers", backward_step(model, images), "images", int(sum(tf.size(v) for v in model.trainable_variables)))
    for first in args.cut or [11, 15]:
        try:
            bottom, top = split_at_block(model, first)
        except ValueError as e:
            raise SystemExit(f"error: {e}") from None
        shape = bottom.output.shape[1:]
        floats = math.prod(shape)
        stored = tf.random.normal([args.batch, *shape])
        report(f"from block {first}", backward_step(top, stored), f"a {'x'.join(map(str, shape))} map, {floats:,} floats",
               int(sum(tf.size(v) for v in top.trainable_variables)))
    print(json.dumps({"backbone": args.backbone, "batch": args.batch, "load_average": round(os.getloadavg()[0], 2), "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The decoding loop's cost per step against the bare backbone and against the loop's floor.

Run `python -m bench.decoding --model-dir EXPORTED_SAVEDMODEL --transform-graph DIR
--profile PROFILE [--images DIR] [--runs N]` (the model and the Transform graph of one run).
One process, the same single images, the sides alternating image by image so that load
from other processes hits all alike:

  backbone       decode + resize + the backbone's feature model, one tf.function call (the
                 bare cost a caption cannot avoid);
  shipped        the given export's `greedy` and `beam_search` signatures, as it was exported;
  this checkout  the same decoder weights exported again with this checkout's models/ code
                 (the SavedModel's variables read into the profile's Keras decoder), so a
                 change to the decoding loop is measured against the code before it; its
                 captions are compared token for token with the shipped export's;
  steps alone    the backbone, the image's encoding, then the decoder's `step` on 1 and on K
                 rows for as many steps as the greedy and the beam loop ran on that image, and
                 nothing else: the loops with their search (argmax or top-k, gathers, the
                 repeated-pair block) for free, so the lower bound of any change to the search
                 code that keeps K rows every step.

Per step = (signature p50 - backbone p50) / that loop's decoding steps: the greedy
caption's words plus <end>; for beam search the longest of its K final beams, plus <end>
(the loop ends when the last of them ends). The floor of one step is estimated two ways and the larger is the floor: the bytes
the step must read (the per-step layers' weights, one embedding row a beam, and the image's
annotations and attention keys) against the memory bandwidth measured here (a numpy copy of
256 MiB), and the step's multiply-adds against the matmul rate measured here at the loop's
own shape (rows = beams). Last, the LSTM's input kernel (the step's largest read) is
multiplied by 1 and by K rows, the same bytes either way, to show what the matmul kernel
makes of K rows. Attention decoders only (every Flickr8k profile). The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from bench.machine import matmul_gflops, memory_bandwidth_gbs

REPO = Path(__file__).resolve().parent.parent
DEFAULT_IMAGES = REPO.parent / "shared" / "flickr8k-fullsize-dev"
GOAL_BEAM = 1.5  # beam search single-image p50 / backbone p50


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.decoding", description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True, help="an exported serving SavedModel (a pushed version)")
    parser.add_argument("--transform-graph", type=Path, required=True, help="the Transform graph of the same run (its vocabulary)")
    parser.add_argument("--profile", default="flickr8k_lite0", help="the profile it was trained with (default flickr8k_lite0)")
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="a folder of JPEGs (default: the full-size dev photos)")
    parser.add_argument("--runs", type=int, default=60, help="timed single-image calls per side (default 60)")
    return parser


def card_of(model_dir: Path) -> dict:
    path = model_dir / "assets.extra" / "captioner_push.json"
    return json.loads(path.read_text())["card"] if path.is_file() else {}


# The attention decoder's layers a decoding step runs (the rest run once per image).
STEP_LAYERS = ("attention_query", "attention_score", "context_gate", "lstm_cell", "deep_output", "logits")


def step_cost(captioner, beams: int, grid_cells: int) -> tuple[float, float]:
    """(bytes read, multiply-adds) of one decoding step of `captioner` over `beams` rows."""
    weights_bytes, macs = 0.0, 0.0
    for layer in captioner.layers:
        if layer.name not in STEP_LAYERS:
            continue
        for v in layer.weights:
            size = 1
            for d in v.shape:
                size *= d
            weights_bytes += 4 * size
            if len(v.shape) == 2:
                rows = beams * (grid_cells if layer.name == "attention_score" else 1)
                macs += rows * size
    # One embedding row per beam; the annotations and keys of the image, per beam row.
    weights_bytes += 4 * beams * (captioner.embedding_dim + grid_cells * (captioner.hidden_dim + captioner.attention_dim))
    macs += beams * grid_cells * captioner.attention_dim  # the keys + query sums, as multiply-adds
    return weights_bytes, macs


def reexport(model_dir: Path, transform_graph: str, profile: str, target: Path):
    """The shipped decoder's weights exported again with this checkout's code; (captioner, backbone)."""
    from bench.decode_sweep import load_trained_decoder
    from models.export import DecodeSettings, export_serving_model

    cfg, vocabulary, backbone, captioner = load_trained_decoder(profile, str(model_dir), transform_graph)
    h, w, _ = backbone.grid_shape
    d = cfg.decode
    export_serving_model(backbone.build_feature_model(), captioner, vocabulary, backbone.image_size,
                         DecodeSettings(cfg.text.max_length, d.beam_width, d.length_penalty, d.default, d.no_repeat_ngram_size),
                         target, cfg.serving.max_image_pixels)
    return captioner, backbone, h * w


def loop_steps_of(signature: str, outputs, max_steps: int) -> int:
    """The steps a decoding loop ran for one image, from its output: the greedy caption's
    words plus <end>; for beam search its longest final beam's (the loop runs until the last
    of its K beams has ended); at most `max_steps` (max_length - 1: a caption cut there has no <end>)."""
    if signature == "greedy":
        captions = [outputs["caption"].numpy()[0]]
    else:
        captions = list(outputs["alternatives"].numpy()[0])
    return min(max(len(c.decode().split()) for c in captions) + 1, max_steps)


def steps_alone(feature_model, image_size, captioner, rows: int):
    """A tf.function (encoded images [1], steps) -> logits: the backbone, then the decoder's
    `step` on `rows` copies of the image `steps` times, without any search around it."""
    import tensorflow as tf

    from models.export import image_input
    from models.images import decode_images

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string), tf.TensorSpec([], tf.int32)])
    def run(encoded, steps):
        outputs = feature_model(decode_images(encoded, image_size))
        inputs = {name: image_input(outputs, name) for name in captioner.image_inputs}
        image = tf.nest.map_structure(lambda t: tf.repeat(t, rows, axis=0), captioner.encode_image(inputs))
        states = captioner.initial_state(image)
        tokens = tf.ones([rows], tf.int64)  # the step's cost does not depend on which tokens
        logits = tf.zeros([rows, captioner.vocab_size])
        for _ in tf.range(steps):
            tf.autograph.experimental.set_loop_options(shape_invariants=[(logits, tf.TensorShape([None, None]))])
            logits, states = captioner.step(tokens, states, image)
        return logits

    return run


def side_figures(name: str, p50_ms: dict[str, float], steps_of: dict[str, float]) -> tuple[float, float]:
    """A side's p50 against the backbone's, and its ms a step over the backbone: what is left
    after the backbone, divided by the steps of that side's own loop (greedy's for a greedy
    side, the beam loop's for a beam side), not by one count for both."""
    loop = "greedy" if name.endswith("greedy") else "beam_search"
    return p50_ms[name] / p50_ms["backbone"], (p50_ms[name] - p50_ms["backbone"]) / steps_of[loop]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tempfile

    import tensorflow as tf

    from configs import load_config
    from models.images import decode_images

    model_dir = args.model_dir
    images = [p.read_bytes() for p in sorted(args.images.glob("*.jpg"))[: max(args.runs, 8)]]
    if not images:
        raise SystemExit(f"error: no .jpg in {args.images}")
    card = card_of(model_dir)
    print(f"model {model_dir} (profile {args.profile}, default {card.get('decode', '?')}); {len(images)} images "
          f"from {args.images}; load average {os.getloadavg()[0]:.2f}")
    target = Path(tempfile.mkdtemp(prefix="reexport-"))
    captioner, backbone, grid_cells = reexport(model_dir, str(args.transform_graph), args.profile, target)
    shipped, mine = tf.saved_model.load(str(model_dir)), tf.saved_model.load(str(target))
    feature_model = backbone.build_feature_model()

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def bare(encoded):
        return feature_model(decode_images(encoded, backbone.image_size))

    # The shipped export's outputs for each image, once: the steps each loop runs on it, and K
    # as the export decodes it (its alternatives), whatever the card or profile say.
    outputs = {name: [shipped.signatures[name](images=tf.constant([image])) for image in images]
               for name in ("greedy", "beam_search") if name in shipped.signatures}
    beams = int(outputs["beam_search"][0]["alternatives"].shape[1]) if "beam_search" in outputs else 1
    max_steps = load_config(args.profile).text.max_length - 1
    loop_steps = {name: [loop_steps_of(name, out, max_steps) for out in outs] for name, outs in outputs.items()}
    alone = {name: steps_alone(feature_model, backbone.image_size, captioner, 1 if name == "greedy" else beams)
             for name in loop_steps}

    sides = {"backbone": lambda i, x: bare(x)}
    for name in ("greedy", "beam_search"):
        if name in shipped.signatures:
            sides[f"shipped {name}"] = lambda i, x, s=shipped.signatures[name]: s(images=x)
            sides[f"this checkout {name}"] = lambda i, x, s=mine.signatures[name]: s(images=x)
            sides[f"steps alone {name}"] = lambda i, x, f=alone[name], n=loop_steps[name]: f(x, tf.constant(n[i], tf.int32))
    for side in sides.values():  # warm-up: tracing, first allocations
        for i in range(3):
            side(i, tf.constant([images[i]]))
    times: dict[str, list[float]] = {name: [] for name in sides}
    captions: dict[str, list[str]] = {name: [] for name in sides if name.startswith(("shipped", "this checkout"))}
    for run in range(args.runs):
        i = run % len(images)
        batch = tf.constant([images[i]])
        for name, side in sides.items():
            started = time.perf_counter()
            out = side(i, batch)
            if name.startswith("steps alone"):
                out.numpy()
            times[name].append(time.perf_counter() - started)
            if name in captions:
                captions[name].append(out["caption"].numpy()[0].decode())
    p50 = {name: 1000 * statistics.median(t) for name, t in times.items()}
    timed = [run % len(images) for run in range(args.runs)]
    steps_of = {name: statistics.mean(n[i] for i in timed) for name, n in loop_steps.items()}
    mean_steps = steps_of["greedy"]
    bandwidth = memory_bandwidth_gbs()
    result = {"model_dir": str(model_dir), "load_average": round(os.getloadavg()[0], 2), "steps_mean": round(mean_steps, 2),
              "beam_steps_mean": round(steps_of.get("beam_search", 0.0), 2),
              "p50_ms": {k: round(v, 2) for k, v in p50.items()}, "memory_gbs": round(bandwidth, 1), "decoders": {}}
    print(f"bare backbone p50 {p50['backbone']:.1f} ms; the greedy loop runs {mean_steps:.1f} steps on average"
          f"{', beam search %.1f' % steps_of['beam_search'] if 'beam_search' in steps_of else ''}; memory {bandwidth:.1f} GB/s")
    for name in sides:
        if name == "backbone":
            continue
        rows = 1 if name.endswith("greedy") else beams
        loop_rate = matmul_gflops(rows, captioner.embedding_dim, captioner.vocab_size)
        weights_bytes, macs = step_cost(captioner, rows, grid_cells)
        floor_ms = 1000 * max(weights_bytes / (bandwidth * 1e9), 2 * macs / (loop_rate * 1e9))
        ratio, per_step = side_figures(name, p50, steps_of)
        entry = {"ratio": round(ratio, 3), "per_step_ms": round(per_step, 3), "floor_ms": round(floor_ms, 4),
                 "step_bytes": int(weights_bytes), "step_macs": int(macs), "loop_matmul_gflops": round(loop_rate, 1)}
        if name.startswith("this checkout"):
            shipped_captions = captions[name.replace("this checkout", "shipped")]
            entry["same_captions"] = f"{sum(a == b for a, b in zip(captions[name], shipped_captions))}/{len(shipped_captions)}"
        result["decoders"][name] = entry
        print(f"{name:26s} p50 {p50[name]:6.1f} ms = {ratio:.2f}x the backbone; {per_step:.3f} ms a step, floor "
              f"{floor_ms:.4f} ms ({weights_bytes / 1e6:.2f} MB at {bandwidth:.0f} GB/s; {2 * macs / 1e6:.2f} MFLOP at "
              f"{loop_rate:.1f} GFLOP/s){'; same captions ' + entry['same_captions'] if 'same_captions' in entry else ''}")
    beam = result["decoders"].get("this checkout beam_search")
    if beam:
        print(f"beam search / backbone {beam['ratio']:.2f} (goal <= {GOAL_BEAM}): {'met' if beam['ratio'] <= GOAL_BEAM else 'NOT met'}")
        bound = result["decoders"]["steps alone beam_search"]["ratio"]
        print(f"with the search free (the decoder's steps alone on {beams} rows): {bound:.2f}, "
              f"{'within' if bound <= GOAL_BEAM else 'beyond'} the goal")
        # The step's largest read, the LSTM's input kernel: what K rows cost against one.
        inner, cols = captioner.embedding_dim + captioner.hidden_dim, 4 * captioner.hidden_dim
        lstm_us = {rows: 2e6 * rows * inner * cols / (matmul_gflops(rows, inner, cols) * 1e9) for rows in (1, beams)}
        result["lstm_kernel_matmul_us"] = {str(rows): round(us, 1) for rows, us in lstm_us.items()}
        print(f"the LSTM kernel's matmul ([rows, {inner}] x [{inner}, {cols}], {4 * inner * cols / 1e6:.1f} MB): 1 row "
              f"{lstm_us[1]:.0f} us, {beams} rows {lstm_us[beams]:.0f} us ({lstm_us[beams] / lstm_us[1]:.1f}x for the same bytes)")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

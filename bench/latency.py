"""Caption latency: the exported serving signature against the notebook's per-token predict loop.

Run `python -m bench.latency [--images DIR] [--model-dir EXPORTED_SAVEDMODEL] [--runs N]`.
Both sides use the same weights and the same image bytes in one process:

  exported  tf.saved_model.load(model_dir).signatures["serving_default"]: JPEG bytes in,
            caption out; decoding, resize, backbone and the greedy loop all in one graph call.
  notebook  the Kaggle DenseNet201/Flickr8k notebook's way, on the same backbone and decoder
            weights from Python: decode + resize (the same TF ops, so the pixels are identical),
            `feature_model.predict(batch)` once, then one `model.predict([features, padded])`
            per generated token in a Python loop -- the sequence so far padded to max_length
            with `pad_sequences`, argmax, append, stop at <end> or after max_length - 1 tokens.
            `model` is a Keras functional wrapper around the same MergeCaptioner that returns
            the logits at the current position (`captioner(...)[:, t]`). The padding is at the
            end ("post") rather than the notebook's "pre": MergeCaptioner has no masking and was
            trained on post-padded tokens, and post padding leaves the LSTM state at position t
            exactly the in-graph one. The per-call overhead of `predict` is kept: that is the point.

Without --model-dir a fresh model is built and exported to a temp dir first: the Lite0 feature
model (real ImageNet weights) and a randomly initialised MergeCaptioner (embedding 256, hidden
256) over ~3000 fake words; the <end> (and pad/<start>) logit biases are set very negative so
every caption runs to max_length - 1 tokens on both sides (the same number of decoding steps;
the output reports the steps taken). With --model-dir, the Keras models for the notebook side
are rebuilt and given the SavedModel's own variables, and the vocabulary and max_length are read
from the SavedModel.

Measured: single-image latency p50/p90 (after warm-up; the two sides alternate image by image so
load from other processes hits both alike) and batch throughput. For the notebook side a batch
means features for the whole batch at once and one predict per token on all its sequences --
the most charitable version of the notebook, which captions one image at a time. Both sides'
captions are compared (greedy, same weights: they should agree). The last line is JSON.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

REPO = Path(__file__).resolve().parent.parent
DEFAULT_IMAGES = REPO.parent / "shared" / "flickr8k" / "Flicker8k_Dataset"
GOAL = 10.0  # exported single-image p50 speedup
FRESH_VOCAB = 3000
FRESH_MAX_LENGTH = 20
NEVER = -1.0e4  # logit bias of tokens a fresh model must not emit


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.latency",
        description="Caption latency: exported serving signature vs. the notebook's per-token model.predict loop.",
    )
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES,
                        help=f"directory of .jpg images (default {DEFAULT_IMAGES}; synthetic images if it is missing)")
    parser.add_argument("--limit", type=int, default=64, help="number of images, first by name (default 64)")
    parser.add_argument("--model-dir", type=Path, default=None,
                        help="an exported serving SavedModel (default: build, export and use a fresh model)")
    parser.add_argument("--runs", type=int, default=20, help="timed single-image runs per side (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed single-image runs per side first (default 3)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per batch for throughput (default 32)")
    parser.add_argument("--batch-runs", type=int, default=1,
                        help="timed passes over all images in batches, per side (default 1)")
    parser.add_argument("--max-length", type=int, default=None,
                        help=f"caption max_length (default: read from --model-dir, else {FRESH_MAX_LENGTH})")
    return parser


def load_images(images: Path, limit: int, workdir: Path) -> tuple[list[bytes], str]:
    """JPEG bytes of the first `limit` images, and where they came from."""
    if images.is_dir():
        paths = sorted(images.glob("*.jpg"))[:limit]
        if paths:
            return [p.read_bytes() for p in paths], str(images)
    from data import synthetic

    out = workdir / "synthetic"
    synthetic.generate_dataset(out, synthetic.SyntheticConfig(num_images=limit, seed=0))
    paths = sorted((out / synthetic.IMAGES_DIR).glob("*.jpg"))[:limit]
    return [p.read_bytes() for p in paths], f"synthetic ({images} not found)"


# ---------------------------------------------------------------------------- models


def fresh_model(max_length: int, export_dir: Path):
    """Lite0 (ImageNet) + a random MergeCaptioner, exported; returns (feature_model, captioner, vocabulary)."""
    import numpy as np
    import tensorflow as tf

    from models import text
    from models.backbones import get_backbone
    from models.decoder import MergeCaptioner
    from models.export import DecodeSettings, export_serving_model

    backbone = get_backbone("efficientnet_lite0")
    feature_model = backbone.build_feature_model()
    vocabulary = [text.PAD, text.START, text.END] + [f"w{i}" for i in range(3, FRESH_VOCAB - 1)] + [text.UNK]
    captioner = MergeCaptioner(len(vocabulary), 256, 256, 0.5)
    captioner({"image_features": tf.zeros([1, backbone.feature_dim]), "tokens": tf.zeros([1, max_length - 1], tf.int64)})
    # Embeddings at the scale of trained ones (default init is +-0.05), so the tokens so far steer
    # the next one and captions vary along the sequence rather than repeating one word.
    captioner.embedding.embeddings.assign(captioner.embedding.embeddings * 20.0)
    kernel, bias = captioner.logits.get_weights()
    for token in (text.PAD, text.START, text.END):  # every caption runs to max_length - 1 tokens
        bias[vocabulary.index(token)] = NEVER
    captioner.logits.set_weights([kernel, bias.astype(np.float32)])
    export_serving_model(feature_model, captioner, vocabulary, backbone.image_size,
                         DecodeSettings(max_length, 1, 0.0, "greedy"), export_dir)
    return feature_model, captioner, vocabulary


def _is_seed(variable) -> bool:
    return "seed_generator" in variable.name


def _function_names(signature) -> list[str]:
    return [f.signature.name for f in signature.graph.as_graph_def().library.function]


def exported_max_length(signature) -> int | None:
    """max_length baked into the greedy loop: its `tf.range(max_length - 1)` limit."""
    from tensorflow.python.framework import tensor_util

    for f in signature.graph.as_graph_def().library.function:
        if "greedy" not in f.signature.name:
            continue
        consts = {n.name: n for n in f.node_def if n.op == "Const"}
        for node in f.node_def:
            if node.op != "Range":
                continue
            values = [consts.get(i.split(":")[0]) for i in node.input]
            if all(v is not None for v in values):
                start, limit, delta = (int(tensor_util.MakeNdarray(v.attr["value"].tensor)) for v in values)
                if start == 0 and delta == 1:
                    return limit + 1
    return None


def models_from_export(loaded):
    """Keras feature model + MergeCaptioner holding the SavedModel's variables, and its vocabulary."""
    import tensorflow as tf

    from models.backbones import get_backbone
    from models.decoder import MergeCaptioner

    keys, values = tf.raw_ops.LookupTableExportV2(
        table_handle=loaded._misc_assets[0].resource_handle, Tkeys=tf.int64, Tvalues=tf.string)
    words = dict(zip(keys.numpy().tolist(), (v.decode() for v in values.numpy())))
    vocabulary = [""] + [words[i] for i in range(1, len(words) + 1)]  # id 0 is the pad (mask) token

    saved = [v for v in loaded.variables if not _is_seed(v)]
    # MergeCaptioner's 10 variables come last: image_projection (D, H), (H); embedding (V, E); ...
    feature_dim, hidden = saved[-10].shape
    vocab_size, embedding = saved[-8].shape
    if vocab_size != len(vocabulary):
        raise SystemExit(f"embedding has {vocab_size} rows but the vocabulary has {len(vocabulary)} words")
    by_dim = {1280: "efficientnet_lite0", 1920: "densenet201"}
    if feature_dim not in by_dim:
        raise SystemExit(f"no known backbone has {feature_dim} features")
    backbone = get_backbone(by_dim[feature_dim], weights=None)
    feature_model = backbone.build_feature_model()
    captioner = MergeCaptioner(int(vocab_size), int(embedding), int(hidden), 0.5)
    captioner({"image_features": tf.zeros([1, feature_dim]), "tokens": tf.zeros([1, 2], tf.int64)})
    mine = [v for v in feature_model.variables + captioner.variables if not _is_seed(v)]
    if len(mine) != len(saved):
        raise SystemExit(f"{backbone.name} + MergeCaptioner have {len(mine)} variables, the SavedModel {len(saved)}")
    for target, source in zip(mine, saved):
        if tuple(target.shape) != tuple(source.shape):
            raise SystemExit(f"{target.path}: shape {tuple(target.shape)} vs saved {tuple(source.shape)}")
        target.assign(source.numpy())
    return backbone, feature_model, captioner, vocabulary


# ---------------------------------------------------------------------------- the two sides


class Exported:
    """The serving signature: bytes [N] -> captions [N], one call."""

    def __init__(self, signature):
        import tensorflow as tf

        self._tf = tf
        self.signature = signature

    def __call__(self, encoded: list[bytes]) -> list[str]:
        out = self.signature(images=self._tf.constant(encoded))["caption"]
        return [c.decode() for c in out.numpy()]


class Notebook:
    """The notebook's loop: features.predict once, then one model.predict per token."""

    def __init__(self, feature_model, captioner, vocabulary: list[str], image_size: int, max_length: int):
        import keras
        import numpy as np
        import tensorflow as tf

        from models import text
        from models.images import decode_images

        self.np, self.keras = np, keras
        self.feature_model = feature_model
        self.vocabulary = vocabulary
        self.max_length = max_length
        self.start_id, self.end_id, self.pad_id = vocabulary.index(text.START), vocabulary.index(text.END), 0
        # The same decode + resize ops as the serving graph, so both sides see identical pixels.
        self.decode = tf.function(lambda b: decode_images(b, image_size), input_signature=[tf.TensorSpec([None], tf.string)])
        features = keras.Input((captioner.image_projection.kernel.shape[0],), name="image_features")
        tokens = keras.Input((max_length,), dtype="int32", name="tokens")
        position = keras.Input((), dtype="int32", name="position")
        logits = captioner({"image_features": features, "tokens": tokens})  # [B, T, V]
        index = keras.ops.reshape(position, (-1, 1, 1))  # broadcast over the vocabulary
        last = keras.ops.take_along_axis(logits, index, axis=1)[:, 0, :]  # captioner(...)[:, t]
        self.model = keras.Model([features, tokens, position], last, name="notebook_step")

    def __call__(self, encoded: list[bytes], max_steps: int | None = None) -> tuple[list[str], int]:
        """Captions of a batch, and the number of per-token predict calls (max_steps: warm-up only)."""
        np, keras = self.np, self.keras
        import tensorflow as tf

        pixels = self.decode(tf.constant(encoded)).numpy()
        features = self.feature_model.predict(pixels, verbose=0)["pooled"]
        n = len(encoded)
        sequences = [[self.start_id] for _ in range(n)]
        finished = np.zeros(n, bool)
        steps = 0
        for t in range(min(self.max_length - 1, max_steps or self.max_length)):
            padded = keras.utils.pad_sequences(sequences, maxlen=self.max_length, padding="post")
            y_pred = self.model.predict([features, padded, np.full(n, t, np.int32)], verbose=0)
            next_ids = np.where(finished, self.pad_id, np.argmax(y_pred, axis=-1))
            for seq, token in zip(sequences, next_ids):
                seq.append(int(token))
            steps += 1
            finished |= next_ids == self.end_id
            if finished.all():
                break
        return [self.to_text(seq[1:]) for seq in sequences], steps

    def to_text(self, ids: list[int]) -> str:
        keep = [self.vocabulary[i] for i in ids if i not in (self.pad_id, self.end_id, self.start_id)]
        return " ".join(w for w in keep if w).strip()


def exported_steps(caption: str, max_length: int) -> int:
    """Decoding steps the greedy loop took for one caption: its words, plus <end> if it stopped early."""
    words = len(caption.split())
    return min(words + 1, max_length - 1)


def timed(fn, *args):
    started, cpu = time.perf_counter(), time.process_time()
    out = fn(*args)
    return out, time.perf_counter() - started, time.process_time() - cpu


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# ---------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    import tensorflow as tf

    started_all = time.perf_counter()
    load_start = loadavg()
    with tempfile.TemporaryDirectory(prefix="bench-latency-") as tmp:
        workdir = Path(tmp)
        images, source = load_images(args.images, args.limit, workdir)
        n = len(images)

        t0 = time.perf_counter()
        if args.model_dir is None:
            max_length = args.max_length or FRESH_MAX_LENGTH
            model_dir = workdir / "export"
            feature_model, captioner, vocabulary = fresh_model(max_length, model_dir)
            model_desc = (f"fresh: efficientnet_lite0 (ImageNet) + random MergeCaptioner, vocab {len(vocabulary)}, "
                          f"embedding/hidden 256/256, <end> bias {NEVER:g} (captions run to max_length)")
            image_size = 224  # efficientnet_lite0
        else:
            model_dir = args.model_dir
        build_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        loaded = tf.saved_model.load(str(model_dir))
        signature_name = "serving_default"
        if any("beam_search" in name for name in _function_names(loaded.signatures[signature_name])):
            signature_name = "greedy"  # the notebook side is greedy; compare greedy with greedy
        signature = loaded.signatures[signature_name]
        if args.model_dir is not None:
            backbone, feature_model, captioner, vocabulary = models_from_export(loaded)
            image_size = backbone.image_size
            found = exported_max_length(signature)
            max_length = args.max_length or found or FRESH_MAX_LENGTH
            model_desc = (f"{model_dir}: {backbone.name} + MergeCaptioner, vocab {len(vocabulary)}, "
                          f"embedding/hidden {captioner.embedding_dim}/{captioner.hidden_dim}, "
                          f"max_length {max_length} ({'from the SavedModel' if found and not args.max_length else 'given/default'})")
        load_s = time.perf_counter() - t0

        exported = Exported(signature)
        notebook = Notebook(feature_model, captioner, vocabulary, image_size, max_length)
        print(f"{n} images from {source}; {os.cpu_count()} CPUs; load average at start {load_start}")
        print(f"model: {model_desc}")
        print(f"signature: {signature_name}; build+export {build_s:.1f} s, load {load_s:.1f} s (both excluded)")

        # Warm-up (traces, first predict calls) for both batch shapes used below; the notebook's
        # predict function is traced once, so a few steps of it are enough after the first.
        for i in range(args.warmup):
            exported([images[i % n]])
            notebook([images[i % n]], max_steps=None if i == 0 else 3)
        batch = images[: args.batch_size]
        exported(batch)
        notebook(batch, max_steps=3)

        # Single image: alternate the sides image by image.
        single = {"exported": [], "notebook": []}
        single_cpu = {"exported": 0.0, "notebook": 0.0}
        captions = {"exported": [], "notebook": []}
        steps = {"exported": [], "notebook": []}
        for r in range(args.runs):
            image = [images[(args.warmup + r) % n]]
            order = ("exported", "notebook") if r % 2 == 0 else ("notebook", "exported")
            for side in order:
                if side == "exported":
                    out, wall, cpu = timed(exported, image)
                    steps[side].append(exported_steps(out[0], max_length))
                else:
                    (out, taken), wall, cpu = timed(notebook, image)
                    steps[side].append(taken)
                single[side].append(wall)
                single_cpu[side] += cpu
                captions[side].extend(out)

        # Batches: every image, in batches of batch_size, alternating sides per batch.
        batch_wall = {"exported": 0.0, "notebook": 0.0}
        batch_cpu = {"exported": 0.0, "notebook": 0.0}
        batch_captions = {"exported": [], "notebook": []}
        batch_images = 0
        for _ in range(args.batch_runs):
            for i in range(0, n, args.batch_size):
                chunk = images[i : i + args.batch_size]
                batch_images += len(chunk)
                out, wall, cpu = timed(exported, chunk)
                batch_wall["exported"] += wall
                batch_cpu["exported"] += cpu
                batch_captions["exported"].extend(out)
                (out, _), wall, cpu = timed(notebook, chunk)
                batch_wall["notebook"] += wall
                batch_cpu["notebook"] += cpu
                batch_captions["notebook"].extend(out)
        load_end = loadavg()

    p50 = {s: statistics.median(v) for s, v in single.items()}
    p90 = {s: percentile(v, 0.9) for s, v in single.items()}
    ips = {s: batch_images / batch_wall[s] for s in batch_wall}
    speed_p50 = p50["notebook"] / p50["exported"]
    speed_p90 = p90["notebook"] / p90["exported"]
    speed_batch = ips["exported"] / ips["notebook"]
    speed_cpu = single_cpu["notebook"] / single_cpu["exported"]
    agree_single = sum(a == b for a, b in zip(captions["exported"], captions["notebook"]))
    agree_batch = sum(a == b for a, b in zip(batch_captions["exported"], batch_captions["notebook"]))
    n_single, n_batch = len(captions["exported"]), len(batch_captions["exported"])
    mean_steps = {s: statistics.mean(v) for s, v in steps.items()}

    print()
    print(f"{'':34s} {'exported (graph)':>18s} {'notebook (predict/token)':>26s} {'speedup':>9s}")
    print(f"{'single image p50 (ms)':34s} {1000 * p50['exported']:18.1f} {1000 * p50['notebook']:26.1f} {speed_p50:8.1f}x")
    print(f"{'single image p90 (ms)':34s} {1000 * p90['exported']:18.1f} {1000 * p90['notebook']:26.1f} {speed_p90:8.1f}x")
    print(f"{'single image CPU s / caption':34s} {single_cpu['exported'] / args.runs:18.3f} "
          f"{single_cpu['notebook'] / args.runs:26.3f} {speed_cpu:8.1f}x")
    print(f"{f'batch of {args.batch_size} (images/s)':34s} {ips['exported']:18.1f} {ips['notebook']:26.1f} {speed_batch:8.1f}x")
    print(f"{'batch CPU s / image':34s} {batch_cpu['exported'] / batch_images:18.3f} "
          f"{batch_cpu['notebook'] / batch_images:26.3f} {batch_cpu['notebook'] / batch_cpu['exported']:8.1f}x")
    print(f"{'decoding steps per caption (mean)':34s} {mean_steps['exported']:18.1f} {mean_steps['notebook']:26.1f}")
    print()
    print(f"runs: {args.runs} single-image per side after {args.warmup} warm-up; batches: {batch_images} images "
          f"per side in batches of {args.batch_size}. The notebook side's batch is its most charitable form "
          f"(features for the whole batch at once, one predict per token on all {args.batch_size} sequences); "
          f"the notebook itself captions one image at a time.")
    print(f"captions agree (same weights, greedy): single {agree_single}/{n_single}, batch {agree_batch}/{n_batch}"
          + ("" if agree_single == n_single and agree_batch == n_batch else "  <-- MISMATCH"))
    for a, b in list(zip(captions["exported"], captions["notebook"]))[:2]:
        print(f"  exported: {a!r}\n  notebook: {b!r}")
    verdict = "met" if speed_p50 >= GOAL else "NOT met"
    print(f"goal exported >= {GOAL:g}x faster on single-image p50: {verdict} ({speed_p50:.1f}x)")
    print(f"load average: start {load_start}, end {load_end}; total {time.perf_counter() - started_all:.0f} s")
    print(json.dumps({
        "bench": "latency",
        "images": n,
        "source": source,
        "model": str(args.model_dir) if args.model_dir else "fresh",
        "signature": signature_name,
        "max_length": max_length,
        "vocab_size": len(vocabulary),
        "cpus": os.cpu_count(),
        "runs": args.runs,
        "batch_size": args.batch_size,
        "exported_p50_ms": round(1000 * p50["exported"], 2),
        "exported_p90_ms": round(1000 * p90["exported"], 2),
        "notebook_p50_ms": round(1000 * p50["notebook"], 2),
        "notebook_p90_ms": round(1000 * p90["notebook"], 2),
        "speedup_p50": round(speed_p50, 2),
        "speedup_p90": round(speed_p90, 2),
        "exported_cpu_s_per_caption": round(single_cpu["exported"] / args.runs, 4),
        "notebook_cpu_s_per_caption": round(single_cpu["notebook"] / args.runs, 4),
        "speedup_cpu": round(speed_cpu, 2),
        "exported_batch_images_per_s": round(ips["exported"], 2),
        "notebook_batch_images_per_s": round(ips["notebook"], 2),
        "speedup_batch": round(speed_batch, 2),
        "exported_batch_cpu_s_per_image": round(batch_cpu["exported"] / batch_images, 4),
        "notebook_batch_cpu_s_per_image": round(batch_cpu["notebook"] / batch_images, 4),
        "steps_exported_mean": round(mean_steps["exported"], 2),
        "steps_notebook_mean": round(mean_steps["notebook"], 2),
        "captions_agree_single": f"{agree_single}/{n_single}",
        "captions_agree_batch": f"{agree_batch}/{n_batch}",
        "goal_met": speed_p50 >= GOAL,
        "loadavg_start": load_start,
        "loadavg_end": load_end,
        "exported_single_ms": [round(1000 * x, 1) for x in single["exported"]],
        "notebook_single_ms": [round(1000 * x, 1) for x in single["notebook"]],
    }))
    sys.stdout.flush()
    del loaded, signature, exported, notebook
    gc.collect()
    return 0


if __name__ == "__main__":
    sys.exit(main())

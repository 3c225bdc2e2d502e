"""Feature step throughput against a bare batched backbone loop, side by side in one run.

Run `python -m bench.features [--images DIR] [--limit N] [--backbone NAME] [--batch-size B]`.
Both sides see the same images, the same batch size and the same model object, built once
before either is timed (so build time counts on neither side), and each side is warmed up
once. The sides are:

  beam   extract.extract_split on a DirectRunner pipeline (in_memory, like the smoke and
         flickr8k profiles) over gzipped TFRecords made from the images: read, parse,
         batch, decode + backbone, serialize, write. Timed as the pipeline's wall clock.
  bare   models.images.decode_images + the feature model in one tf.function, on batches of
         the images' bytes already in memory, in a plain Python loop.

The ratio beam/bare is the share of the backbone's throughput the pipeline keeps (goal
>= 0.9). The sides alternate --repeats times and each keeps its best run, which evens out
load from other processes; the ratio of CPU seconds (this process, all threads) is printed
too, as it barely moves with such load. The last line is JSON for the README.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

REPO = Path(__file__).resolve().parent.parent
DEFAULT_IMAGES = REPO.parent / "shared" / "flickr8k" / "Flicker8k_Dataset"
GOAL = 0.9
CAPTIONS = tuple(f"a placeholder caption number {i} of typical length for the benchmark ." for i in range(5))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.features",
        description="Throughput of the FeatureExtractor Beam step vs. a bare batched backbone loop.",
    )
    parser.add_argument(
        "--images", type=Path, default=DEFAULT_IMAGES,
        help=f"directory of .jpg images (default {DEFAULT_IMAGES}; synthetic images if it is missing)",
    )
    parser.add_argument("--limit", type=int, default=512, help="number of images, first by name (default 512)")
    parser.add_argument("--backbone", default="efficientnet_lite0", help="efficientnet_lite0 (default) or densenet201")
    parser.add_argument("--weights", default="imagenet", help='"imagenet" or "none" (default imagenet)')
    parser.add_argument("--batch-size", type=int, default=32, help="images per backbone call (default 32)")
    parser.add_argument("--store-grid", action="store_true", help="also write the spatial grid (beam side)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per side, alternating, best kept (default 3)")
    parser.add_argument("--direct-running-mode", default="in_memory",
                        choices=("in_memory", "multi_threading", "multi_processing"),
                        help="DirectRunner mode of the beam side (default in_memory)")
    return parser


def load_images(images: Path, limit: int, workdir: Path) -> tuple[list[tuple[str, bytes]], str]:
    """(image id, JPEG bytes) of the first `limit` images, and where they came from."""
    if images.is_dir():
        paths = sorted(images.glob("*.jpg"))[:limit]
        if paths:
            return [(p.stem, p.read_bytes()) for p in paths], str(images)
    from data import synthetic

    out = workdir / "synthetic"
    synthetic.generate_dataset(out, synthetic.SyntheticConfig(num_images=limit, seed=0))
    paths = sorted((out / synthetic.IMAGES_DIR).glob("*.jpg"))[:limit]
    return [(p.stem, p.read_bytes()) for p in paths], f"synthetic ({images} not found)"


def write_records(images: list[tuple[str, bytes]], split_dir: Path) -> str:
    """Raw examples as Flickr8kExampleGen writes them; returns the file pattern."""
    import tensorflow as tf

    from components.flickr8k_example_gen import records

    split_dir.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(split_dir / "data_tfrecord-00000-of-00001.gz"), options="GZIP") as writer:
        for image_id, data in images:
            height, width = records.inspect_image(data, max_pixels=50_000_000)
            writer.write(records.build_example(image_id, data, height, width, CAPTIONS).SerializeToString())
    return str(split_dir / "*.gz")


def time_beam(pattern: str, out_dir: Path, args, backbone_args, running_mode: str) -> tuple[float, float, dict]:
    """Wall and CPU seconds of one extract_split pipeline, and its metrics."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from components.feature_extractor import extract

    started, cpu = time.perf_counter(), time.process_time()
    with beam.Pipeline(options=PipelineOptions([f"--direct_running_mode={running_mode}"])) as pipeline:
        extract.extract_split(pipeline, pattern, str(out_dir / "Split-bench" / extract.OUTPUT_PREFIX),
                              backbone_args, args.batch_size, args.store_grid, split="bench")
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    return seconds, cpu, extract.split_metrics(pipeline.result)["bench"]


def time_bare(encoded: list[bytes], model, image_size: int, batch_size: int, grid: bool) -> tuple[float, float]:
    """Wall and CPU seconds of decode_images + model over all images, batch by batch."""
    import tensorflow as tf

    from models.images import decode_images

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def features(batch):
        out = model(decode_images(batch, image_size), training=False)
        return [out["pooled"], out["grid"]] if grid else [out["pooled"]]

    [t.numpy() for t in features(tf.constant(encoded[:batch_size]))]  # warm-up
    started, cpu = time.perf_counter(), time.process_time()
    for i in range(0, len(encoded), batch_size):
        [t.numpy() for t in features(tf.constant(encoded[i : i + batch_size]))]
    return time.perf_counter() - started, time.process_time() - cpu


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    from components.feature_extractor import extract
    from components.feature_extractor import feature_model

    weights = None if args.weights.lower() == "none" else args.weights
    backbone_args = feature_model.BackboneArgs(args.backbone, weights)
    with tempfile.TemporaryDirectory(prefix="bench-features-") as tmp:
        workdir = Path(tmp)
        images, source = load_images(args.images, args.limit, workdir)
        n = len(images)
        pattern = write_records(images, workdir / "raw" / "Split-bench")
        warm_pattern = write_records(images[: args.batch_size], workdir / "warm" / "Split-bench")
        print(f"{n} images from {source}; backbone {args.backbone}, batch {args.batch_size}, "
              f"store_grid {args.store_grid}, DirectRunner {args.direct_running_mode}, {os.cpu_count()} CPUs")

        # Built once, before anything is timed; the DoFns reuse it (feature_model.load_feature_model).
        model = feature_model.load_feature_model(backbone_args)
        print(f"model build (excluded): {model.build_seconds:.1f} s")
        time_beam(warm_pattern, workdir / "warm-out", args, backbone_args, args.direct_running_mode)

        encoded = [data for _, data in images]
        bare_runs, beam_runs, model_s = [], [], []
        for r in range(args.repeats):
            bare_runs.append(time_bare(encoded, model.model, model.backbone.image_size, args.batch_size, args.store_grid))
            out_dir = workdir / f"out{r}"
            wall, cpu, metrics = time_beam(pattern, out_dir, args, backbone_args, args.direct_running_mode)
            if metrics["images"] != n:
                raise SystemExit(f"the beam side wrote {metrics['images']} of {n} images")
            beam_runs.append((wall, cpu))
            model_s.append(metrics["model_ms"] / 1000)
            out_bytes = sum(f.stat().st_size for f in out_dir.rglob("*") if f.is_file())
            shutil.rmtree(out_dir)  # 250 KB an image with the grid: keep one run's on disk at a time

    (bare_s, bare_cpu), (beam_s, beam_cpu) = min(bare_runs), min(beam_runs)
    bare_ips, beam_ips = n / bare_s, n / beam_s
    ratio = beam_ips / bare_ips
    ratio_cpu = min(c for _, c in bare_runs) / min(c for _, c in beam_runs)
    in_dofn = model_s[beam_runs.index((beam_s, beam_cpu))]
    print(f"bare backbone loop : {bare_ips:6.1f} images/s ({bare_s:.2f} s wall, {bare_cpu:.2f} s CPU)")
    print(f"feature step (Beam): {beam_ips:6.1f} images/s ({beam_s:.2f} s wall, {beam_cpu:.2f} s CPU; "
          f"{in_dofn:.2f} s in the backbone call; {out_bytes / n / 1024:.1f} KiB written an image)")
    print(f"ratio beam/bare    : {ratio:.3f} wall, {ratio_cpu:.3f} CPU (goal >= {GOAL})")
    print(json.dumps({
        "bench": "features",
        "images": n,
        "source": source,
        "backbone": args.backbone,
        "batch_size": args.batch_size,
        "store_grid": args.store_grid,
        "direct_running_mode": args.direct_running_mode,
        "cpus": os.cpu_count(),
        "bare_images_per_s": round(bare_ips, 2),
        "beam_images_per_s": round(beam_ips, 2),
        "ratio": round(ratio, 3),
        "ratio_cpu": round(ratio_cpu, 3),
        "bare_seconds": [round(w, 2) for w, _ in bare_runs],
        "beam_seconds": [round(w, 2) for w, _ in beam_runs],
        "bare_cpu_seconds": [round(c, 2) for _, c in bare_runs],
        "beam_cpu_seconds": [round(c, 2) for _, c in beam_runs],
        "beam_backbone_seconds": [round(s, 2) for s in model_s],
        "output_bytes_per_image": round(out_bytes / n),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())

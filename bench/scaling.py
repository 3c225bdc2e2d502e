"""Ingestion and feature extraction time as the data grows, and with 1 vs 2 Beam workers.

Run `python -m bench.scaling [--images DIR] [--sizes 1000,3500,7000] [--workers-size 1000]
[--skip-workers]` (or `make bench-scaling`). It runs the project's real components,
Flickr8kExampleGen then FeatureExtractor, with TFX's LocalDagRunner on the `flickr8k_lite0`
profile (EfficientNet-Lite0, its offline ImageNet weights) and measures:

  sizes    the first N images of --images for each of --sizes, with the profile's own Beam
           setup (DirectRunner, in_memory, 1 worker);
  workers  the --workers-size subset with DirectRunner multi_processing and 1 worker, then 2
           workers (the same subset, one after the other in the same run).

Subsets: a temporary directory per size in the release layout (generated here, deleted at the
end, never in the repo): symlinks to the images, the split files and Flickr8k.token.txt cut
to the chosen images. Each split keeps its share of N (largest remainder: 1,000 of 6,000
train + 1,000 dev is 857 + 143) and takes its first ids in sorted order, so a smaller subset
is contained in a larger one and every run picks the same images.

The pipeline: `ingest_and_features_pipeline` below builds the full create_pipeline for the
config and data and keeps its own three nodes for these two components (the ImportSchemaGen
gives FeatureExtractor its required `schema` input; it only records a file path), cut loose
from the nodes that are not run. So the benchmark times exactly the nodes a run wires:
StatisticsGen, ExampleValidator and AnomaliesCheck, which sit between them in the full
pipeline, are not run. Whatever the profile implies is measured as it is: with its
attention decoder, FeatureExtractor also writes each image's 7x7x1280 grid (config.stores_grid).

What is timed: each measurement runs in a fresh Python process (so no Beam cache, backbone or
traced function survives from one to the next; every process pays its imports before any
timer starts) with a fresh pipeline root and ML Metadata store (so TFX's cache cannot skip
work; each execution is checked to be COMPLETE, not CACHED). A component's time is its ML
Metadata execution's create -> last-update time: from when the launcher registers the
execution, through the executor (Beam pipeline set-up, the work, the Beam worker processes'
start-up in multi_processing, the backbone build and first trace inside FeatureExtractor), to
the publication of its outputs. The components' own inner timings are reported beside them:
`seconds` of the ingestion report (scan + Beam pipeline) and the FeatureExtractor's log line
`features: N images in S s` (its Beam pipeline). Machine load is not controlled: the load
average around each measurement is recorded. The last line is JSON for the README.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from data import layout

REPO = Path(__file__).resolve().parent.parent
PROFILE = "flickr8k_lite0"
DEFAULT_IMAGES = Path(os.environ.get("CAPTIONER_DATA_DIR") or REPO.parent / "shared" / "flickr8k")
# The component ids create_pipeline gives the nodes this benchmark runs.
EXAMPLE_GEN, SCHEMA_GEN, FEATURES = "Flickr8kExampleGen", "ImportSchemaGen", "FeatureExtractor"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.scaling",
        description="Wall-clock time of ingestion and feature extraction (real TFX components, "
        f"LocalDagRunner, profile {PROFILE}) at several dataset sizes and with 1 vs 2 Beam workers.",
    )
    parser.add_argument(
        "--images", type=Path, default=DEFAULT_IMAGES,
        help=f"a Flickr8k copy in the release layout (default $CAPTIONER_DATA_DIR or {DEFAULT_IMAGES})",
    )
    parser.add_argument("--sizes", default="1000,3500,7000", help="comma-separated image counts (default 1000,3500,7000)")
    parser.add_argument("--workers-size", type=int, default=1000, help="images for the 1 vs 2 workers runs (default 1000)")
    parser.add_argument("--skip-workers", action="store_true", help="only the sizes runs")
    # Internal: one measurement in this (fresh) process; prints its result as JSON.
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    return parser


# --- subsets -------------------------------------------------------------------------


def proportional_counts(sizes: Mapping[str, int], n: int) -> dict[str, int]:
    """`n` shared among the splits in proportion to `sizes` (largest remainder; ties: first split)."""
    total = sum(sizes.values())
    if not 0 < n <= total:
        raise ValueError(f"cannot take {n} images out of {total}")
    floors, remainders = {}, {}
    for split, size in sizes.items():
        floors[split], remainders[split] = divmod(n * size, total)
    order = list(sizes)
    left = n - sum(floors.values())
    for split in sorted(order, key=lambda s: (-remainders[s], order.index(s)))[:left]:
        floors[split] += 1
    return floors


def make_subset(source: Path, n: int, dest: Path) -> dict[str, list[str]]:
    """Writes the first `n` images of `source` to `dest` in the release layout; ids per split.

    Images are symlinks; split files and the token file keep only the chosen images (the
    token file's lines in their original order, byte for byte).
    """
    source, dest = Path(source).resolve(), Path(dest)
    if not layout.looks_like_flickr8k_layout(source):
        raise FileNotFoundError(f"{source} is not in the Flickr8k layout ({layout.IMAGE_DIR}/, {layout.TOKEN_FILE})")
    on_disk = {layout.image_id_of(p.name) for p in (source / layout.IMAGE_DIR).iterdir() if p.suffix == ".jpg"}
    per_split = {
        split: sorted(i for i in layout.read_split_ids(source / name) if i in on_disk)
        for split, name in layout.SPLIT_FILES.items()
        if (source / name).is_file()
    }
    if not per_split:
        raise FileNotFoundError(f"{source} has none of the split files {list(layout.SPLIT_FILES.values())}")
    counts = proportional_counts({s: len(ids) for s, ids in per_split.items()}, n)
    chosen = {split: ids[: counts[split]] for split, ids in per_split.items()}
    wanted = {i for ids in chosen.values() for i in ids}

    (dest / layout.IMAGE_DIR).mkdir(parents=True)
    for image_id in sorted(wanted):
        name = f"{image_id}.jpg"
        (dest / layout.IMAGE_DIR / name).symlink_to(source / layout.IMAGE_DIR / name)
    for split, ids in chosen.items():
        (dest / layout.SPLIT_FILES[split]).write_text("".join(f"{i}.jpg\n" for i in ids))
    with open(source / layout.TOKEN_FILE, "rb") as src, open(dest / layout.TOKEN_FILE, "wb") as out:
        for line in src:
            name = line.split(b"\t", 1)[0].split(b"#", 1)[0].decode("utf-8", "replace")
            if layout.image_id_of(name) in wanted:
                out.write(line)
    return chosen


# --- one measurement (in its own process) ---------------------------------------------


def ingest_and_features_pipeline(config, data_dir: Path, splits: list[str], data_fingerprint: str,
                                 pipeline_root: Path, metadata_path: Path, push_dir: str):
    """create_pipeline's own Flickr8kExampleGen, ImportSchemaGen and FeatureExtractor nodes,
    cut loose from the nodes that are not run, as a pipeline of their own."""
    from tfx import v1 as tfx

    from pipelines.pipeline import beam_pipeline_args, create_pipeline

    full = create_pipeline(config, data_dir, splits, data_fingerprint, pipeline_root, metadata_path,
                           push_dir=push_dir)
    kept = [node for node in full.components if node.id in (EXAMPLE_GEN, SCHEMA_GEN, FEATURES)]
    if sorted(node.id for node in kept) != sorted((EXAMPLE_GEN, SCHEMA_GEN, FEATURES)):
        raise AssertionError(f"create_pipeline has nodes {sorted(n.id for n in full.components)}")
    kept_ids = {node.id for node in kept}
    for node in kept:
        for other in list(node.upstream_nodes):
            if other.id not in kept_ids:  # e.g. AnomaliesCheck, an ordering-only dependency
                node.remove_upstream_node(other)
        for other in list(node.downstream_nodes):
            if other.id not in kept_ids:
                node.remove_downstream_node(other)
    return tfx.dsl.Pipeline(
        pipeline_name=config.pipeline.name,
        pipeline_root=str(pipeline_root),
        components=kept,
        enable_cache=config.pipeline.enable_cache,
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(str(metadata_path)),
        beam_pipeline_args=beam_pipeline_args(config),
    )


class _FeatureSummary(logging.Handler):
    """Keeps the FeatureExtractor's own total (`features: N images in S s, ...`)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.seconds: float | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if isinstance(record.msg, str) and record.msg.startswith("features: %d images in %.1f s"):
            self.seconds = float(record.args[1])


def measure(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Runs the benchmark pipeline once on spec["data_dir"]; component times from ML Metadata."""
    import warnings

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.setLevel(logging.WARNING)  # the INFO records below are for _FeatureSummary only
    summary = _FeatureSummary()
    extract_log = logging.getLogger("components.feature_extractor.extract")
    extract_log.setLevel(logging.INFO)
    extract_log.addHandler(summary)

    from ml_metadata.metadata_store import metadata_store
    from ml_metadata.proto import metadata_store_pb2
    from tfx import v1 as tfx

    from configs import load_config
    from data.fingerprint import fingerprint
    from data.layout import available_splits
    from data.resolve import ensure_dataset
    workdir = Path(spec["workdir"])
    config = load_config(PROFILE, {
        "data.data_dir": spec["data_dir"],
        "pipeline.output_root": str(workdir),
        "push.base_dir": str(workdir / "push"),
        "beam.direct_running_mode": spec["mode"],
        "beam.direct_num_workers": spec["workers"],
    }, env={})
    data_dir = ensure_dataset(config)
    splits = available_splits(data_dir, config.data.splits)
    data_hash = fingerprint(data_dir)
    root, metadata_path = workdir / "tfx", workdir / "metadata.db"
    args = (config, data_dir, splits, data_hash, root, metadata_path)
    pipeline = ingest_and_features_pipeline(*args, push_dir=str(workdir / "push"))

    load_before = os.getloadavg()
    started = time.perf_counter()
    tfx.orchestration.LocalDagRunner().run(pipeline)
    pipeline_s = time.perf_counter() - started
    load_after = os.getloadavg()

    connection = metadata_store_pb2.ConnectionConfig()
    connection.sqlite.filename_uri = str(metadata_path)
    store = metadata_store.MetadataStore(connection)
    types = {t.id: t.name.rsplit(".", 1)[-1] for t in store.get_execution_types()}
    runs: dict[str, dict[str, Any]] = {}
    for execution in store.get_executions():
        name = types[execution.type_id]
        if name not in (EXAMPLE_GEN, FEATURES):
            continue
        state = metadata_store_pb2.Execution.State.Name(execution.last_known_state)
        if state != "COMPLETE":
            raise RuntimeError(f"{name} execution {execution.id} is {state}, not COMPLETE: nothing to time")
        events = store.get_events_by_execution_ids([execution.id])
        outputs = store.get_artifacts_by_id(
            [e.artifact_id for e in events if e.type == metadata_store_pb2.Event.OUTPUT]
        )
        runs[name] = {
            "seconds": (execution.last_update_time_since_epoch - execution.create_time_since_epoch) / 1000,
            "outputs": outputs,
        }
    if set(runs) != {EXAMPLE_GEN, FEATURES}:
        raise RuntimeError(f"ML Metadata has executions of {sorted(runs)} only")

    report_uri = next(a.uri for a in runs[EXAMPLE_GEN]["outputs"] if a.uri.rstrip("/").split("/")[-2] == "report")
    report = json.loads((Path(report_uri) / "ingestion_report.json").read_text())
    feature_examples = next(
        a for a in runs[FEATURES]["outputs"] if a.uri.rstrip("/").split("/")[-2] == "features"
    )
    featured = {
        split: feature_examples.custom_properties[f"num_examples_{split}"].int_value for split in splits
    }
    return {
        "images": sum(report["examples_per_split"].values()),
        "examples_per_split": report["examples_per_split"],
        "featured_per_split": featured,
        "skipped_images": report["skipped_images"],
        "direct_running_mode": spec["mode"],
        "direct_num_workers": spec["workers"],
        "backbone": config.features.backbone,
        "batch_size": config.features.batch_size,
        "store_grid": config.stores_grid,
        "ingestion_s": round(runs[EXAMPLE_GEN]["seconds"], 2),
        "features_s": round(runs[FEATURES]["seconds"], 2),
        "ingestion_own_s": report["seconds"],
        "features_own_s": None if summary.seconds is None else round(summary.seconds, 2),
        "pipeline_s": round(pipeline_s, 2),
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in load_after],
    }


# --- the benchmark --------------------------------------------------------------------


def run_measurement(label: str, data_dir: Path, mode: str, workers: int, workdir: Path) -> dict[str, Any]:
    """One measurement in a fresh Python process; its result (the child's last stdout line)."""
    spec = {"data_dir": str(data_dir), "mode": mode, "workers": workers, "workdir": str(workdir)}
    print(f"[{time.strftime('%H:%M:%S')}] {label}: running ...", file=sys.stderr, flush=True)
    started = time.perf_counter()
    env = dict(os.environ)
    # Also reaches the Beam worker processes of multi_processing, which start from scratch.
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.setdefault("PYTHONWARNINGS", "ignore::FutureWarning")
    child = subprocess.run(
        [sys.executable, "-m", "bench.scaling", "--measure", json.dumps(spec)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, text=True, check=False,
    )
    lines = child.stdout.strip().splitlines()
    if child.returncode != 0 or not lines:
        raise SystemExit(f"error: measurement {label!r} failed (exit {child.returncode}); its log is above")
    result = json.loads(lines[-1])
    result["process_s"] = round(time.perf_counter() - started, 1)
    print(f"[{time.strftime('%H:%M:%S')}] {label}: ingestion {result['ingestion_s']:.1f} s, "
          f"features {result['features_s']:.1f} s", file=sys.stderr, flush=True)
    return result


def _rates(result: dict[str, Any]) -> dict[str, Any]:
    n = result["images"]
    return {
        **result,
        "ingestion_images_per_s": round(n / result["ingestion_s"], 1),
        "features_images_per_s": round(n / result["features_s"], 1),
    }


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


COLUMNS = ("ingestion s", "images/s", "features s", "images/s", "own ingest s", "own feat. s", "load before/after")


def _row(label: str, cells: Sequence[str]) -> str:
    return f"{label:<26}" + "".join(f"{c:>{len(h) + 2}}" for c, h in zip(cells, COLUMNS))


def _cells(r: dict) -> list[str]:
    return [
        _num(r["ingestion_s"]), _num(r["ingestion_images_per_s"]),
        _num(r["features_s"]), _num(r["features_images_per_s"]),
        _num(r["ingestion_own_s"]), _num(r["features_own_s"]),
        f"{r['load_before'][0]:.1f} / {r['load_after'][0]:.1f}",
    ]


def print_tables(sizes: list[dict], workers: list[dict], workers_size: int) -> None:
    first = (sizes or workers)[0]
    print(f"\nFeatureExtractor: {first['backbone']}, batch {first['batch_size']}, "
          f"{'pooled vector and 7x7 grid' if first['store_grid'] else 'pooled vector only'} per image")
    if sizes:
        print(f"\nScaling with the number of images (profile {PROFILE}, DirectRunner in_memory, 1 worker)")
        print(_row("images (train + dev)", COLUMNS))
        for r in sizes:
            split = " + ".join(str(v) for v in r["featured_per_split"].values())
            print(_row(f"{r['images']:,} ({split})", _cells(r)))
    if workers:
        print(f"\nBeam workers at {workers_size:,} images (DirectRunner multi_processing)")
        print(_row("setup", COLUMNS))
        for r in sizes:
            if r["images"] == workers_size:
                print(_row("in_memory (sizes run)", _cells(r)))
        for r in workers:
            print(_row(f"multi_processing x{r['direct_num_workers']}", _cells(r)))
        one, two = workers
        speedup = [f"{one['ingestion_s'] / two['ingestion_s']:.2f}x", "", f"{one['features_s'] / two['features_s']:.2f}x"]
        print(_row("speed-up x2 vs x1", speedup) + "   (time with 1 worker / time with 2)")
    print("\ntimes: ML Metadata execution create -> last update of each component; own: the ingestion "
          "report's seconds and the FeatureExtractor's 'features: N images in S s' log line; load: 1-min average")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.measure:
        print(json.dumps(measure(json.loads(args.measure))))
        return 0

    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    source = args.images.resolve()
    print(f"{source}; profile {PROFILE}; sizes {sizes}; workers "
          f"{'skipped' if args.skip_workers else f'1 vs 2 at {args.workers_size}'}; {os.cpu_count()} CPUs",
          flush=True)
    size_results, worker_results = [], []
    with tempfile.TemporaryDirectory(prefix="bench-scaling-") as tmp:
        tmp_path = Path(tmp)
        subsets: dict[int, Path] = {}

        def subset(n: int) -> Path:
            if n not in subsets:
                chosen = make_subset(source, n, tmp_path / "subsets" / str(n))
                subsets[n] = tmp_path / "subsets" / str(n)
                print(f"subset of {n:,} images: " + ", ".join(f"{s} {len(i)}" for s, i in chosen.items()),
                      file=sys.stderr, flush=True)
            return subsets[n]

        for n in sizes:
            result = run_measurement(f"{n} images, in_memory", subset(n), "in_memory", 1, tmp_path / "runs" / f"size-{n}")
            if result["images"] != n or sum(result["featured_per_split"].values()) != n:
                raise SystemExit(f"error: {n} images asked, {result['images']} ingested, "
                                 f"{result['featured_per_split']} featured")
            size_results.append(_rates(result))
        if not args.skip_workers:
            for workers in (1, 2):
                result = run_measurement(
                    f"{args.workers_size} images, multi_processing x{workers}", subset(args.workers_size),
                    "multi_processing", workers, tmp_path / "runs" / f"workers-{workers}",
                )
                worker_results.append(_rates(result))

    print_tables(size_results, worker_results, args.workers_size)
    out: dict[str, Any] = {
        "bench": "scaling",
        "profile": PROFILE,
        "source": str(source),
        "cpus": os.cpu_count(),
        "backbone": (size_results or worker_results)[0]["backbone"],
        "store_grid": (size_results or worker_results)[0]["store_grid"],
        "timed": "ML Metadata execution create -> last update of each component, fresh process and store each",
        "sizes": size_results,
    }
    if worker_results:
        one, two = worker_results
        out["workers"] = {
            "images": args.workers_size,
            "runs": worker_results,
            "speedup_ingestion_2_vs_1": round(one["ingestion_s"] / two["ingestion_s"], 3),
            "speedup_features_2_vs_1": round(one["features_s"] / two["features_s"], 3),
        }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

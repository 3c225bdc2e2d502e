"""Ingestion of a Flickr8k-layout directory: Beam writes per-split TFRecords and a report.

Called by the Flickr8kExampleGen executor with a Beam pipeline factory; tests call it
directly with a plain DirectRunner pipeline. Splits are decided by the split files before
any image is read, so one image never lands in two splits. Output appears in `out_dir`
only when the run succeeds: examples are staged in a hidden directory and moved into
place after the skip threshold is checked, so a failed run leaves nothing a later step
could read.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Callable

import apache_beam as beam

from components.flickr8k_example_gen import records
from data import layout
from models.contract import INGESTION_REPORT_FILE

log = logging.getLogger(__name__)

EXAMPLES_PREFIX = "data_tfrecord"
STAGING_DIR = ".staging"


class IngestionError(RuntimeError):
    """Too many records were skipped: the run fails and publishes no examples."""


@dataclasses.dataclass(frozen=True)
class IngestionResult:
    splits: list[str]
    examples_per_split: dict[str, int]
    report: dict


def split_dir(out_dir: str | Path, split: str) -> Path:
    """TFX's layout for an Examples artifact: `<uri>/Split-<name>/`."""
    return Path(out_dir) / f"Split-{split}"


def run_ingestion(
    data_dir: str | Path,
    splits: list[str],
    out_dir: str | Path,
    report_dir: str | Path,
    make_pipeline: Callable[[], beam.Pipeline],
    max_skipped_fraction: float,
    max_image_pixels: int,
    num_shards: int = 0,
) -> IngestionResult:
    """Scan, load and check images in Beam, write examples, and enforce the skip threshold."""
    started = time.monotonic()
    scan = layout.scan_layout(Path(data_dir), splits)
    staging = Path(out_dir) / STAGING_DIR
    shutil.rmtree(staging, ignore_errors=True)
    present = [s for s in splits if s in scan.records]
    log.info(
        "ingesting %s: %s",
        data_dir,
        ", ".join(f"{s}={len(scan.records[s])} images" for s in present),
    )

    with make_pipeline() as pipeline:
        for split in present:
            outcomes = (
                pipeline
                | f"List[{split}]" >> beam.Create(scan.records[split], reshuffle=True)
                | f"Load[{split}]" >> beam.Map(records.load_record, max_pixels=max_image_pixels)
            )
            (
                outcomes
                | f"Good[{split}]" >> beam.FlatMap(lambda o: [o.example] if o.example else [])
                | f"Write[{split}]"
                >> beam.io.WriteToTFRecord(
                    str(split_dir(staging, split) / EXAMPLES_PREFIX),
                    file_name_suffix=".gz",
                    num_shards=num_shards,
                )
            )
            (
                outcomes
                | f"Bad[{split}]" >> beam.Filter(lambda o: o.skip_reason is not None)
                | f"AsJson[{split}]"
                >> beam.Map(lambda o: json.dumps({"id": o.image_id, "reason": o.skip_reason, "detail": o.detail}))
                | f"WriteSkips[{split}]"
                >> beam.io.WriteToText(str(staging / "skipped" / split), file_name_suffix=".jsonl")
            )

    skipped_per_split = _tally_image_skips(staging / "skipped", scan.tally)
    examples_per_split = {s: len(scan.records[s]) - skipped_per_split.get(s, 0) for s in present}
    report = {
        "data_dir": str(data_dir),
        "splits": present,
        "missing_split_files": scan.missing_split_files,
        "examples_per_split": examples_per_split,
        "images_in_no_split": scan.images_in_no_split,
        "max_skipped_fraction": max_skipped_fraction,
        **scan.tally.to_dict(),
        "seconds": round(time.monotonic() - started, 2),
    }
    _write_report(Path(report_dir), report)
    _log_report(report)

    over = scan.tally.over(max_skipped_fraction)
    if over:
        shutil.rmtree(staging, ignore_errors=True)
        raise IngestionError(
            "ingestion failed: skipped "
            + " and ".join(f"{v:.1%} of {k.replace('_', ' ')}" for k, v in over.items())
            + f", above the limit of {max_skipped_fraction:.1%} (ingest.max_skipped_fraction). "
            + "Skipped by reason: "
            + ", ".join(f"{r}={n}" for r, n in report["skipped_by_reason"].items())
            + f". Details: {Path(report_dir) / INGESTION_REPORT_FILE}"
        )
    for split in present:
        os.replace(split_dir(staging, split), split_dir(out_dir, split))
    shutil.rmtree(staging, ignore_errors=True)
    return IngestionResult(present, examples_per_split, report)


def _tally_image_skips(skipped_dir: Path, tally: layout.SkipTally) -> dict[str, int]:
    """Fold the images Beam skipped into the tally; returns skipped images per split."""
    per_split: dict[str, int] = {}
    for path in sorted(skipped_dir.glob("*.jsonl")):
        split = path.name.split("-")[0]
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            tally.skip(entry["reason"], f"{entry['id']}: {entry['detail']}")
            per_split[split] = per_split.get(split, 0) + 1
    return per_split


def _write_report(report_dir: Path, report: dict) -> None:
    report_dir.mkdir(parents=True, exist_ok=True)
    tmp = report_dir / f".{INGESTION_REPORT_FILE}.tmp"
    tmp.write_text(json.dumps(report, indent=2, sort_keys=True))
    os.replace(tmp, report_dir / INGESTION_REPORT_FILE)


def _log_report(report: dict) -> None:
    log.info(
        "ingested %s in %.1f s; skipped %d of %d images and %d of %d caption lines%s",
        report["examples_per_split"],
        report["seconds"],
        report["skipped_images"],
        report["total_images"],
        report["skipped_caption_lines"],
        report["total_caption_lines"],
        (": " + ", ".join(f"{r}={n}" for r, n in report["skipped_by_reason"].items()))
        if report["skipped_by_reason"]
        else "",
    )

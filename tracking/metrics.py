"""What a pipeline run measured, as MLflow params, metrics and the dataset input.

Names are stable (dashboards and tests use them):
- params: the whole config flattened (`train.epochs`, ...), `backbone`, `vocabulary_size`,
  `examples.<split>`, `images.total|skipped`, `caption_lines.total|skipped`, `skipped.<reason>`
- metrics per epoch (step = epoch from 1): EPOCH_METRICS and `learning_rate`; once:
  `epochs_trained`, `best_val_loss`, `train_seconds`; the evaluator's `bleu_1`..`bleu_4`,
  `cider`, coco-caption's (`coco_*`, `meteor`) when computed, `eval_num_images`, `eval_seconds`
- the dataset: one input of the run (digest = the data fingerprint, source = the data
  directory or URI, profile = the counts per split), context `train`.
Public MLflow client API only; no TFX, no TensorFlow.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any, Mapping
from urllib.parse import urlparse

from models.coco_caption import COCO_METRICS
from tracking.lifecycle import clip

MAX_PARAM_CHARS = 6000
# The Trainer's per-epoch values, under the names of its history (step = epoch from 1).
EPOCH_METRICS = ("loss", "val_loss", "accuracy", "val_accuracy", "epoch_seconds",
                 "val_bleu_1", "val_bleu_2", "val_bleu_3", "val_bleu_4",  # BLEU: train.select_by or SCST
                 "scst_reward", "val_cider_d")  # self-critical training (scst.epochs)
# metrics.json key -> MLflow metric name.
EVAL_METRICS = {"bleu_1": "bleu_1", "bleu_2": "bleu_2", "bleu_3": "bleu_3", "bleu_4": "bleu_4",
                "cider": "cider", "num_images": "eval_num_images", "seconds": "eval_seconds",
                **{name: name for name in COCO_METRICS}}  # coco-caption's: coco_bleu_1.., meteor, ...
MAX_BATCH = 1000  # log_batch takes at most 1000 metrics


def epoch_metrics(logs: Mapping[str, Any], epoch: int, keys: tuple[str, ...], timestamp_ms: int | None = None) -> list:
    """MLflow Metric rows for one finished epoch (`epoch` counts from 1): the finite values of `keys`."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
    rows = []
    for key in keys:
        value = logs.get(key)
        if value is None:
            continue
        value = float(value)
        if math.isfinite(value):
            rows.append(Metric(key, value, now, epoch))
    return rows


def has_metric(client, run_id: str, key: str) -> bool:
    """Whether the run already holds values of `key` (logged live, so not to be logged again)."""
    return bool(client.get_metric_history(run_id, key))


def log_rows(client, run_id: str, rows: list) -> None:
    for start in range(0, len(rows), MAX_BATCH):
        client.log_batch(run_id, metrics=rows[start : start + MAX_BATCH])


def log_history(client, run_id: str, history: Mapping[str, list]) -> None:
    """A training's history: the per-epoch values the run does not hold yet (a Trainer that
    logged them live, or a cached one that logged them in an earlier run) and the totals."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    rows = [
        Metric(key, float(value), now, epoch)
        for key in EPOCH_METRICS
        if not has_metric(client, run_id, key)
        for epoch, value in enumerate(history.get(key) or [], start=1)
        if value is not None and math.isfinite(float(value))
    ]
    totals = {}
    if history.get("loss"):
        totals["epochs_trained"] = len(history["loss"])
    if history.get("val_loss"):
        totals["best_val_loss"] = min(history["val_loss"])
    if any(v is not None for v in history.get("scst_reward") or []):
        totals["scst_epochs_trained"] = sum(v is not None for v in history["scst_reward"])
    if history.get("epoch_seconds"):
        totals["train_seconds"] = float(sum(history["epoch_seconds"]))
    rows += [Metric(key, float(value), now, 0) for key, value in totals.items() if not has_metric(client, run_id, key)]
    log_rows(client, run_id, rows)


def evaluation_values(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The evaluator's metrics.json as MLflow metrics (names in EVAL_METRICS)."""
    return {name: float(metrics[key]) for key, name in EVAL_METRICS.items() if metrics.get(key) is not None}


def log_values(client, run_id: str, values: Mapping[str, float]) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    log_rows(client, run_id, [Metric(k, float(v), now, 0) for k, v in values.items() if math.isfinite(float(v))])


def param_value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return json.dumps(list(value))
    return clip("null" if value is None else str(value), MAX_PARAM_CHARS)


def log_params(client, run_id: str, params: Mapping[str, Any]) -> None:
    """Params as strings (lists as JSON), in batches; a value logged before must be the same."""
    from mlflow.entities import Param

    rows = [Param(k, param_value(v)) for k, v in params.items()]
    for start in range(0, len(rows), 100):  # log_batch takes at most 100 params
        client.log_batch(run_id, params=rows[start : start + 100])


def ingestion_params(report: Mapping[str, Any]) -> dict[str, str]:
    """Counts of the ingestion report (components/flickr8k_example_gen) as params."""
    counts: dict[str, Any] = {f"examples.{split}": n for split, n in report.get("examples_per_split", {}).items()}
    counts.update({
        "images.total": report.get("total_images"),
        "images.skipped": report.get("skipped_images"),
        "caption_lines.total": report.get("total_caption_lines"),
        "caption_lines.skipped": report.get("skipped_caption_lines"),
    })
    counts.update({f"skipped.{reason}": n for reason, n in report.get("skipped_by_reason", {}).items()})
    return {k: str(v) for k, v in counts.items() if v is not None}


def log_dataset(client, run_id: str, name: str, fingerprint: str, source: str, report: Mapping[str, Any] | None) -> None:
    """The data snapshot as the run's input (MLflow's Datasets): its fingerprint as digest,
    where it was read from as source, and the examples per split as its profile."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    scheme = urlparse(source).scheme
    source_type = "local" if scheme in ("", "file") or len(scheme) == 1 else scheme  # "C:" is a drive
    profile = {}
    if report:
        splits = report.get("examples_per_split", {})
        profile = {"num_rows": sum(splits.values()), "splits": splits,
                   "images": report.get("total_images"), "skipped_images": report.get("skipped_images")}
    dataset = Dataset(name=name, digest=fingerprint[:36], source_type=source_type,
                      source=json.dumps({"uri": source}), profile=json.dumps(profile))
    client.log_inputs(run_id, datasets=[DatasetInput(dataset, tags=[InputTag("mlflow.data.context", "train")])])

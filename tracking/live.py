"""MLflow from inside the pipeline's steps, while they run: the MLflow run of a TFX pipeline
run, and per-epoch metrics as the epochs end.

One TFX pipeline run is one MLflow run, found (or created) by its tag `pipeline_run_id`, so
whoever logs first creates it and everyone else, the runner's final record included, adds
to it. The settings travel as a plain dict (`TrackingSettings.to_dict`) in a component's
parameters, so the same code logs under LocalDagRunner, Kubeflow or Vertex. Public MLflow
client API only; no TFX, no TensorFlow.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any, Mapping

RUN_TAG = "pipeline_run_id"  # the TFX pipeline run id; one MLflow run per value
PIPELINE_TAG = "pipeline_name"
# The Trainer's per-epoch values, under the names of its history (step = epoch from 1).
EPOCH_METRICS = ("loss", "val_loss", "accuracy", "val_accuracy", "epoch_seconds",
                 "val_bleu_1", "val_bleu_2", "val_bleu_3", "val_bleu_4")  # BLEU: train.select_by


@dataclasses.dataclass(frozen=True)
class TrackingSettings:
    """Where a pipeline's runs are recorded; `pipeline_run_id` is filled in at run time."""

    tracking_uri: str
    experiment: str
    pipeline_name: str
    artifact_location: str | None = None  # for a new experiment (sqlite stores); servers decide
    pipeline_run_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> TrackingSettings:
        return cls(**dict(raw))


def experiment_id(client, name: str, artifact_location: str | None = None) -> str:
    """The experiment called `name`, created (with `artifact_location`) when missing."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location)
    except Exception:  # created meanwhile by another process
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def find_run(client, experiment: str, pipeline_run_id: str) -> str | None:
    """The MLflow run id recording this TFX pipeline run, or None; the oldest if several."""
    runs = client.search_runs(
        [experiment], filter_string=f"tags.{RUN_TAG} = {_quoted(pipeline_run_id)}",
        order_by=["attributes.start_time ASC"], max_results=1,
    )
    return runs[0].info.run_id if runs else None


def find_or_create_run(client, settings: TrackingSettings) -> str:
    """The run of `settings.pipeline_run_id`: the one already there, or a new RUNNING one."""
    if not settings.pipeline_run_id:
        raise ValueError("the TFX pipeline run id is not known, so there is no run to find")
    experiment = experiment_id(client, settings.experiment, settings.artifact_location)
    found = find_run(client, experiment, settings.pipeline_run_id)
    if found is not None:
        return found
    tags = {RUN_TAG: settings.pipeline_run_id, PIPELINE_TAG: settings.pipeline_name}
    name = f"{settings.pipeline_name} {settings.pipeline_run_id}"
    return client.create_run(experiment, tags=tags, run_name=name).info.run_id


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


def _quoted(value: str) -> str:
    """A string literal for MLflow's search filter: single quotes, or double quotes around a
    value with a single quote in it (the filter language has no escapes)."""
    if "'" not in value:
        return f"'{value}'"
    if '"' in value:
        raise ValueError(f"a pipeline run id with both kinds of quote cannot be searched for: {value!r}")
    return f'"{value}"'


def sqlite_artifact_root(config) -> Path | None:
    """Where artifacts go beside a sqlite store: `<db dir>/mlartifacts`, which for the
    default store is `<output root>/mlartifacts`. None for a tracking server."""
    uri = config.mlflow_tracking_uri
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///"):]).parent / "mlartifacts"


def settings_of(config) -> TrackingSettings:
    """The tracking settings of a `configs.Config`: its store (a server, or the sqlite file
    under the output root with artifacts beside it), experiment and pipeline name."""
    root = sqlite_artifact_root(config)
    location = None if root is None else (root / config.mlflow.experiment).as_uri()
    return TrackingSettings(config.mlflow_tracking_uri, config.mlflow.experiment, config.pipeline.name, location)

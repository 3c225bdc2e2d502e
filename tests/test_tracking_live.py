"""tracking/live.py against a real MLflow store (sqlite in a temporary directory): one MLflow
run per TFX pipeline run, whoever asks first, and epoch rows as the Trainer sends them."""

from __future__ import annotations

import math

import mlflow
import pytest

from tracking import live


@pytest.fixture
def client(tmp_path):
    return mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")


def settings(tmp_path, run_id: str | None) -> live.TrackingSettings:
    return live.TrackingSettings(f"sqlite:///{tmp_path / 'mlflow.db'}", "captioner", "captioner-smoke",
                                 (tmp_path / "mlartifacts").as_uri(), run_id)


def test_one_mlflow_run_per_pipeline_run_whoever_asks_first(client, tmp_path):
    first = live.find_or_create_run(client, settings(tmp_path, "2026-12-04T10:00:00.1"))
    again = live.find_or_create_run(client, settings(tmp_path, "2026-12-04T10:00:00.1"))
    other = live.find_or_create_run(client, settings(tmp_path, "2026-12-04T11:00:00.2"))
    assert first == again != other
    run = client.get_run(first)
    assert run.info.status == "RUNNING"
    assert run.data.tags[live.RUN_TAG] == "2026-12-04T10:00:00.1"
    assert run.data.tags[live.PIPELINE_TAG] == "captioner-smoke"
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == "captioner" and experiment.artifact_location == (tmp_path / "mlartifacts").as_uri()
    assert live.find_run(client, run.info.experiment_id, "2026-12-04T12:00:00.3") is None


def test_a_run_id_with_a_quote_is_matched_exactly(client, tmp_path):
    odd = live.find_or_create_run(client, settings(tmp_path, "run 'one'"))
    plain = live.find_or_create_run(client, settings(tmp_path, "run one"))
    assert odd != plain and live.find_or_create_run(client, settings(tmp_path, "run 'one'")) == odd


def test_without_a_pipeline_run_id_there_is_no_run_to_find(client, tmp_path):
    with pytest.raises(ValueError, match="pipeline run id is not known"):
        live.find_or_create_run(client, settings(tmp_path, None))


def test_epoch_rows_keep_the_finite_values_asked_for_at_their_epoch(client, tmp_path):
    logs = {"loss": 1.5, "val_loss": math.nan, "accuracy": None, "other": 3.0, "val_accuracy": 0.25}
    rows = live.epoch_metrics(logs, 3, ("loss", "val_loss", "accuracy", "val_accuracy"), timestamp_ms=1234)
    assert [(r.key, r.value, r.step, r.timestamp) for r in rows] == [("loss", 1.5, 3, 1234), ("val_accuracy", 0.25, 3, 1234)]
    run_id = live.find_or_create_run(client, settings(tmp_path, "r"))
    assert not live.has_metric(client, run_id, "loss")
    client.log_batch(run_id, metrics=rows)
    assert live.has_metric(client, run_id, "loss") and not live.has_metric(client, run_id, "val_loss")


def test_settings_travel_as_a_plain_dict(tmp_path):
    original = settings(tmp_path, "r")
    assert live.TrackingSettings.from_dict(original.to_dict()) == original

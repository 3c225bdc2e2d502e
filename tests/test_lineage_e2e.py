"""`tracking.lineage` on the session's smoke run: ML Metadata and MLflow, no side files."""

from __future__ import annotations

import json

import pytest

from data.fingerprint import fingerprint

pytestmark = pytest.mark.e2e


def cli_args(smoke_run, *more: str) -> list[str]:
    config = smoke_run.config
    return [
        "--profile", "smoke",
        "--set", f"pipeline.output_root={config.output_root}",
        "--set", f"mlflow.tracking_uri={config.mlflow.tracking_uri}",
        *more,
    ]


def test_lineage_of_version_1_names_data_runs_and_bleu(smoke_run, capsys, monkeypatch):
    from mlflow import MlflowClient

    from tracking import lineage

    for name in ("CAPTIONER_DATA_DIR", "CAPTIONER_OUTPUT_ROOT"):
        monkeypatch.delenv(name, raising=False)
    assert lineage.main(cli_args(smoke_run, "--version", "1", "--json")) == 0
    found = json.loads(capsys.readouterr().out)

    config = smoke_run.config
    assert found["version"] == 1
    assert found["data_dir"] == str(config.data_dir)
    assert found["data_fingerprint"] == fingerprint(config.data_dir)
    assert found["pipeline_name"] == config.pipeline.name
    assert found["pipeline_run_id"] == smoke_run.pipeline_run_id
    assert found["mlflow_run_id"] == smoke_run.mlflow_run_id
    assert found["profile"] == "smoke"
    assert found["config_params"]["features.backbone"] == config.features.backbone
    assert found["config_uri"].endswith("/config/config.json")
    assert found["trainer_config"]["train"]["epochs"] == config.train.epochs
    assert found["pushed_destination"] == str(config.push_dir / "1")
    run = MlflowClient(tracking_uri=config.mlflow.tracking_uri).get_run(smoke_run.mlflow_run_id)
    assert found["bleu"]["bleu_4"] == pytest.approx(run.data.metrics["bleu_4"])
    assert set(found["bleu"]) == {"bleu_1", "bleu_2", "bleu_3", "bleu_4"}

    assert lineage.main(cli_args(smoke_run, "--version", "1")) == 0
    text = capsys.readouterr().out
    assert str(config.data_dir) in text and smoke_run.pipeline_run_id in text and smoke_run.mlflow_run_id in text


def test_unknown_version_exits_1_and_lists_the_pushed_ones(smoke_run, capsys):
    from tracking import lineage

    assert lineage.main(cli_args(smoke_run, "--version", "99")) == 1
    err = capsys.readouterr().err
    assert "model version 99 was never pushed" in err and "pushed versions: 1" in err

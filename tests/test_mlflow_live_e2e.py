"""MLflow while a pipeline runs: the Trainer logs each epoch as it ends, into the one MLflow
run of the TFX pipeline run, which the runner's final record completes. Uses the session's
attention run (its own process), recorded on the real `mlflow server` and polled meanwhile."""

from __future__ import annotations

import json

import pytest

from tests import mlmd

pytestmark = pytest.mark.e2e


def test_the_epochs_arrive_while_training_is_still_going(attention_run):
    samples = attention_run.mlflow_samples
    assert samples, "the poller saw no run of the pipeline at all"
    epochs = len(json.loads((mlmd.latest_uri(attention_run.metadata_path, "ModelRun") / "history.json").read_text())["loss"])
    # A UI polling the server saw the run RUNNING with some of the epochs but not all of them yet.
    partial = [len(loss) for _, status, loss in samples if status == "RUNNING" and 0 < len(loss) < epochs]
    assert partial, f"no sample caught the training half way ({epochs} epochs; samples: {sorted({len(s[2]) for s in samples})})"
    assert len(set(partial)) >= 2, f"the epochs did not come one by one: {sorted(set(partial))}"


def test_one_run_per_pipeline_run_with_each_epoch_stamped_when_it_ended(attention_run, mlflow_server):
    from mlflow import MlflowClient

    assert {run_id for run_id, _, _ in attention_run.mlflow_samples} == {attention_run.mlflow_run_id}
    client = MlflowClient(mlflow_server.uri)
    run = client.get_run(attention_run.mlflow_run_id)
    assert run.info.status == "FINISHED" and run.data.tags["pipeline_run_id"] == attention_run.pipeline_run_id
    history = json.loads((mlmd.latest_uri(attention_run.metadata_path, "ModelRun") / "history.json").read_text())
    for key in ("loss", "val_loss", "epoch_seconds"):
        logged = client.get_metric_history(run.info.run_id, key)
        assert [m.step for m in logged] == list(range(1, len(history[key]) + 1)), key  # each epoch once
        stamps = [m.timestamp for m in logged]
        assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps), f"{key}: not logged epoch by epoch"
    assert [m.value for m in client.get_metric_history(run.info.run_id, "loss")] == pytest.approx(history["loss"])


def test_the_pushed_models_card_names_the_runs_that_trained_it(attention_run, mlflow_server):
    from mlflow import MlflowClient

    card = json.loads((attention_run.config.push_dir / "1" / "assets.extra" / "captioner_push.json").read_text())["card"]
    assert card["pipeline_run_id"] == attention_run.pipeline_run_id
    assert card["mlflow_run_id"] == attention_run.mlflow_run_id
    run = MlflowClient(mlflow_server.uri).get_run(attention_run.mlflow_run_id)
    assert str(card["vocabulary_size"]) == run.data.params["vocabulary_size"]  # counted from the Transform graph
    assert card["epochs_trained"] == run.data.metrics["epochs_trained"]


def test_the_self_critical_epochs_follow_the_cross_entropy_ones(attention_run, mlflow_server):
    """smoke_attention runs two SCST epochs: their reward and dev CIDEr-D are logged live,
    numbered on after the cross-entropy epochs, as the history holds them."""
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_server.uri)
    history = json.loads((mlmd.latest_uri(attention_run.metadata_path, "ModelRun") / "history.json").read_text())
    epochs, scst_epochs = len(history["loss"]), attention_run.config.scst.epochs
    assert scst_epochs == 2
    for key in ("scst_reward", "val_cider_d", "val_bleu_4"):
        assert history[key][:epochs] == [None] * epochs and None not in history[key][epochs:], key
        logged = client.get_metric_history(attention_run.mlflow_run_id, key)
        assert [m.step for m in logged] == list(range(epochs + 1, epochs + scst_epochs + 1)), key
        assert [m.value for m in logged] == pytest.approx(history[key][epochs:]), key
    assert len(history["epoch_seconds"]) == epochs + scst_epochs
    run = client.get_run(attention_run.mlflow_run_id)
    assert run.data.metrics["scst_epochs_trained"] == scst_epochs
    assert "SCST epoch 2/2: mean sample reward" in attention_run.console

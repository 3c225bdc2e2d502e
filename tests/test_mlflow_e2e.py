"""End to end: the session's smoke run as MLflow recorded it on a real tracking server.

Everything is read back through the server's REST API (`MlflowClient(tracking_uri=...)`)
and compared with what ML Metadata says the pipeline produced.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest
from mlflow import MlflowClient
from PIL import Image

from data import layout
from tests import mlmd
from tests.runs import smoke_config

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def client(mlflow_server) -> MlflowClient:
    return MlflowClient(tracking_uri=mlflow_server.uri)


@pytest.fixture(scope="module")
def run(smoke_run, client):
    """The one MLflow run of the smoke run's pipeline run id."""
    assert smoke_run.pipeline_run_id, "the runner did not find its pipeline run in ML Metadata"
    experiment = client.get_experiment_by_name(smoke_run.config.mlflow.experiment)
    runs = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.pipeline_run_id = '{smoke_run.pipeline_run_id}'"
    )
    assert len(runs) == 1, [r.info.run_id for r in runs]
    assert runs[0].info.run_id == smoke_run.mlflow_run_id
    return runs[0]


@pytest.fixture(scope="module")
def artifacts(run, client, tmp_path_factory) -> Path:
    """All run artifacts (not the model), downloaded through the server."""
    return Path(client.download_artifacts(run.info.run_id, "", str(tmp_path_factory.mktemp("run_artifacts"))))


def _custom(artifact, key):
    value = artifact.custom_properties[key]
    return getattr(value, value.WhichOneof("value"))


def test_run_finished_with_config_data_counts_vocabulary_and_backbone(smoke_run, run):
    import tensorflow_transform as tft

    from models.vocabulary import load_vocabulary

    config = smoke_run.config
    params = run.data.params
    assert run.info.status == "FINISHED"
    assert params["pipeline.name"] == config.pipeline.name
    assert params["train.epochs"] == str(config.train.epochs)
    assert params["text.max_length"] == str(config.text.max_length)
    assert params["mlflow.tracking_uri"] == smoke_run.config.mlflow.tracking_uri
    assert params["backbone"] == params["features.backbone"] == config.features.backbone
    transform_graph = mlmd.latest_uri(smoke_run.metadata_path, "TransformGraph")
    assert params["vocabulary_size"] == str(len(load_vocabulary(tft.TFTransformOutput(str(transform_graph)))))
    report_dir = mlmd.latest_uri(smoke_run.metadata_path, "captioner.IngestionReport")
    report = json.loads((report_dir / "ingestion_report.json").read_text())
    for split, count in report["examples_per_split"].items():
        assert params[f"examples.{split}"] == str(count)
    assert sum(int(params[f"examples.{s}"]) for s in ("train", "dev", "test")) == config.data.synthetic.num_images
    assert (params["images.skipped"], params["caption_lines.skipped"]) == ("0", "0")


def test_run_times_are_the_pipeline_runs_not_the_loggings(smoke_run, run, client):
    history = json.loads((mlmd.latest_uri(smoke_run.metadata_path, "ModelRun") / "history.json").read_text())
    trainer = mlmd.executions(smoke_run.metadata_path, "TrackedTrainer")[-1]
    first_epoch = client.get_metric_history(run.info.run_id, "loss")[0]
    # The Trainer opens the run when training starts (to log its epochs live), and the run
    # ends when the pipeline has: it spans the training, not just the few seconds of logging.
    assert trainer.create_time_since_epoch <= run.info.start_time <= first_epoch.timestamp
    assert run.info.end_time - run.info.start_time >= 1000 * sum(history["epoch_seconds"])


def test_run_has_loss_curves_per_epoch_and_the_evaluator_bleu(smoke_run, run, client):
    history = json.loads((mlmd.latest_uri(smoke_run.metadata_path, "ModelRun") / "history.json").read_text())
    for key in ("loss", "val_loss"):
        logged = client.get_metric_history(run.info.run_id, key)
        assert [m.step for m in logged] == list(range(1, len(history[key]) + 1))  # epoch numbers
        assert [m.value for m in logged] == pytest.approx(history[key])
    assert run.data.metrics["epochs_trained"] == len(history["loss"])
    metrics = json.loads((mlmd.latest_uri(smoke_run.metadata_path, "captioner.CaptionEvaluation") / "metrics.json").read_text())
    for key in ("bleu_1", "bleu_2", "bleu_3", "bleu_4"):
        assert run.data.metrics[key] == pytest.approx(metrics[key])
    assert ("meteor" in run.data.metrics) == (metrics.get("meteor") is not None)
    assert run.data.metrics["eval_num_images"] == metrics["num_images"]


def test_run_tags_name_the_pipeline_run_data_gate_and_push(smoke_run, run):
    from data.fingerprint import fingerprint

    tags = run.data.tags
    assert tags["pipeline_run_id"] == smoke_run.pipeline_run_id
    assert tags["data_fingerprint"] == fingerprint(smoke_run.config.data_dir)
    # The first blessing and push are the smoke run's own; later tests may rerun the pipeline.
    blessing = mlmd.live_artifacts(smoke_run.metadata_path, "ModelBlessing")[0]
    assert tags["gate_decision"] == ("blessed" if _custom(blessing, "blessed") == 1 else "not blessed")
    assert tags["gate_reason"] == _custom(blessing, "reason")
    assert tags["gate_decision"] == "blessed", tags["gate_reason"]
    pushed = mlmd.live_artifacts(smoke_run.metadata_path, "PushedModel")[0]
    assert tags["pushed"] == "true"
    assert tags["pushed_version"] == str(_custom(pushed, "pushed_version")) == "1"
    assert tags["pushed_destination"] == _custom(pushed, "pushed_destination")
    assert "error" not in tags and "tracking_errors" not in tags


def test_run_artifacts_describe_the_data(smoke_run, artifacts):
    assert "captions" in (artifacts / "data" / "schema.pbtxt").read_text()
    assert json.loads((artifacts / "data" / "anomalies.json").read_text()) == {"dev": [], "test": [], "train": []}
    rows = list(csv.DictReader(io.StringIO((artifacts / "data" / "statistics.csv").read_text())))
    captions = {r["split"]: r for r in rows if r["feature"] == "captions"}
    report = json.loads((artifacts / "data" / "ingestion_report.json").read_text())
    assert {split: int(r["count"]) for split, r in captions.items()} == report["examples_per_split"]
    assert all(r["min_values"] == r["max_values"] == "5" for r in captions.values())
    assert "## train" in (artifacts / "data" / "statistics.md").read_text()


def test_learning_curve_is_a_png(artifacts):
    with Image.open(artifacts / "training" / "learning_curve.png") as image:
        assert image.format == "PNG" and image.width >= 400


def test_gallery_shows_eval_images_with_generated_and_reference_captions(smoke_run, artifacts):
    page = (artifacts / "evaluation" / "gallery.html").read_text()
    predictions = [json.loads(line) for line in (artifacts / "evaluation" / "predictions.jsonl").read_text().splitlines()]
    expected = min(smoke_run.config.mlflow.gallery_size, len(predictions))
    assert len(re.findall(r'<img src="data:image/jpeg;base64,[A-Za-z0-9+/=]{200,}"', page)) == expected == 20
    shown = [p for p in predictions if f'alt="{p["image_id"]}"' in page]
    assert len(shown) == expected
    for p in shown:
        assert p["caption"] in page and p["references"][0] in page


def test_logged_model_loads_with_pyfunc_and_captions_images(smoke_run, run, mlflow_server, artifacts):
    import mlflow
    import pandas as pd

    from tracking.mlflow_logger import using_tracking_uri

    records = layout.scan_layout(smoke_run.config.data_dir, [smoke_run.config.data.eval_split]).records
    records = records[smoke_run.config.data.eval_split][:3]
    predictions = {
        p["image_id"]: p["caption"]
        for p in map(json.loads, (artifacts / "evaluation" / "predictions.jsonl").read_text().splitlines())
    }
    with using_tracking_uri(mlflow_server.uri):
        model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    images = [Path(r.path).read_bytes() for r in records]
    captions = list(model.predict(pd.DataFrame({"image": images}))["caption"])
    # The very captions the evaluator got from the serving signature for these images.
    assert captions == [predictions[r.image_id] for r in records]
    assert list(model.predict(images[:1])["caption"]) == captions[:1]


def test_pushed_model_is_the_production_version_in_the_registry(smoke_run, run, client):
    version = client.get_model_version_by_alias(smoke_run.config.mlflow.registered_model, "production")
    assert version.run_id == run.info.run_id
    assert version.tags["pushed_version"] == run.data.tags["pushed_version"]
    assert run.data.tags["registered_model_version"] == f"{version.name}/{version.version}"


def _only_run(client, experiment: str):
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no experiment {experiment!r}: the failed run was not recorded"
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1
    return runs[0]


def test_a_failed_pipeline_run_is_recorded_as_failed_with_its_error(mlflow_server, client, tmp_path):
    from data.resolve import ensure_dataset
    from pipelines import local_runner

    config = smoke_config(tmp_path, **{
        "data.synthetic.num_images": 10,
        "mlflow.tracking_uri": mlflow_server.uri,
        "mlflow.experiment": "failed-ingestion",
    })
    victim = sorted((ensure_dataset(config) / "Flicker8k_Dataset").glob("*.jpg"))[0]
    victim.write_bytes(victim.read_bytes()[:200])  # 1 corrupt image of 10: over the 1% limit
    with pytest.raises(RuntimeError, match="image_corrupt"):
        local_runner.run(config)
    run = _only_run(client, "failed-ingestion")
    assert run.info.status == "FAILED"
    assert "image_corrupt" in run.data.tags["error"]
    assert run.data.tags["pipeline_run_id"]  # the run had started: ExampleGen failed in it
    assert run.data.params["data.synthetic.num_images"] == "10"


def test_a_run_that_fails_before_the_pipeline_starts_is_recorded_too(mlflow_server, client, tmp_path):
    from pipelines import local_runner

    config = smoke_config(tmp_path, **{
        "mlflow.tracking_uri": mlflow_server.uri,
        "mlflow.experiment": "failed-before-start",
    })
    config.data_dir.mkdir(parents=True)
    (config.data_dir / "notes.txt").write_text("not a dataset")  # data.synthetic refuses to replace it
    with pytest.raises(FileExistsError, match="not made by data.synthetic"):
        local_runner.run(config)
    run = _only_run(client, "failed-before-start")
    assert run.info.status == "FAILED"
    assert run.data.tags["error"].startswith("FileExistsError:")
    assert run.data.tags["pipeline_run_id"] == "" and "data_fingerprint" not in run.data.tags
    assert run.data.params["pipeline.name"] == config.pipeline.name

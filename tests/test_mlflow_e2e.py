"""End to end: the session's smoke run as its steps recorded it on a real tracking server,
and a small pipeline run three times (fresh, from the cache, with a failing push).

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

    from tracking.registry import using_tracking_uri

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


def test_the_run_holds_the_dataset_as_its_input(smoke_run, run):
    from data.fingerprint import fingerprint

    [dataset] = run.inputs.dataset_inputs
    report = json.loads((mlmd.latest_uri(smoke_run.metadata_path, "captioner.IngestionReport") / "ingestion_report.json").read_text())
    assert dataset.dataset.name == "synthetic"
    assert dataset.dataset.digest == fingerprint(smoke_run.config.data_dir)[:36]  # MLflow keeps 36 characters
    # MLflow keeps one dataset per name and digest in an experiment: the same snapshot logged
    # from another directory (the session's other runs generate the same data) keeps the
    # source it was first logged with, a directory holding that very content.
    source = Path(json.loads(dataset.dataset.source)["uri"])
    assert fingerprint(source) == fingerprint(smoke_run.config.data_dir)
    assert json.loads(dataset.dataset.profile)["splits"] == report["examples_per_split"]
    assert [(t.key, t.value) for t in dataset.tags] == [("mlflow.data.context", "train")]


def test_system_metrics_were_sampled_while_training(smoke_run, run, client):
    history = json.loads((mlmd.latest_uri(smoke_run.metadata_path, "ModelRun") / "history.json").read_text())
    cpu = client.get_metric_history(run.info.run_id, "system/cpu_utilization_percentage")
    memory = client.get_metric_history(run.info.run_id, "system/system_memory_usage_megabytes")
    epochs = client.get_metric_history(run.info.run_id, "loss")
    assert cpu and memory, sorted(run.data.metrics)
    assert all(0 <= m.value <= 100 for m in cpu) and all(m.value > 100 for m in memory)
    # Sampled during the training: from before the last epoch ended (every 10 s).
    assert min(m.timestamp for m in cpu) <= epochs[-1].timestamp or sum(history["epoch_seconds"]) < 10


def test_the_run_says_who_ran_it_from_which_source_and_when(smoke_run, run):
    import getpass
    import subprocess

    tags = run.data.tags
    assert tags["mlflow.user"] == getpass.getuser()
    assert tags["mlflow.source.type"] == "JOB" and Path(tags["mlflow.source.name"]) == Path(__file__).resolve().parents[1]
    head = subprocess.run(["git", "-C", tags["mlflow.source.name"], "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:
        assert tags["mlflow.source.git.commit"] == head.stdout.strip()
    assert re.fullmatch(r"smoke \d{4}-\d\d-\d\d \d\d:\d\d", run.info.run_name), run.info.run_name


def test_the_logged_model_lists_every_serving_signature_and_has_an_image_example(smoke_run, run, mlflow_server, tmp_path):
    import tensorflow as tf
    from mlflow.models import Model

    from tracking.registry import using_tracking_uri

    with using_tracking_uri(mlflow_server.uri):
        import mlflow

        local = mlflow.artifacts.download_artifacts(f"runs:/{run.info.run_id}/model", dst_path=str(tmp_path))
    model = Model.load(local)
    exported = tf.saved_model.load(str(mlmd.latest_uri(smoke_run.metadata_path, "Model") / "Format-Serving"))
    outputs = {name for sig in exported.signatures.values() for name in sig.structured_outputs}
    assert {c.name for c in model.signature.outputs.inputs} == outputs
    assert {"caption", "log_probability"} <= outputs
    example = model.load_input_example(local)
    with Image.open(io.BytesIO(example.iloc[0, 0])) as image:
        assert image.format == "JPEG" and max(image.size) <= 96


# --- a small pipeline: fresh, then from the cache, then with a failing push --------------

@pytest.fixture(scope="module")
def three_runs(mlflow_server, tmp_path_factory):
    """Three runs of one small pipeline in one output root: a fresh one, the same again (all
    from the cache but the gate and push, whose baseline is now the first run's model), and
    one whose push directory is a file, so CaptionPusher fails."""
    from pipelines import local_runner

    root = tmp_path_factory.mktemp("three_runs")
    settings = {"data.synthetic.num_images": 24, "mlflow.tracking_uri": mlflow_server.uri,
                "mlflow.experiment": "three-runs", "mlflow.registered_model": "captioner-three-runs",
                "gate.min_bleu_4": 0.0, "gate.min_bleu_1": 0.0}
    first = local_runner.run(smoke_config(root, **settings))
    second = local_runner.run(smoke_config(root, **settings))
    (root / "not-a-dir").write_text("a file where the push directory should be")
    with pytest.raises(Exception) as failure:
        local_runner.run(smoke_config(root, **{**settings, "push.base_dir": str(root / "not-a-dir")}))
    return first, second, failure.value


def test_a_cached_rerun_links_the_model_and_adds_no_copy_or_version(three_runs, client):
    first, second, _ = three_runs
    assert first.mlflow_run_id and second.mlflow_run_id and first.mlflow_run_id != second.mlflow_run_id
    experiment = client.get_experiment_by_name("three-runs").experiment_id
    [model] = client.search_logged_models([experiment])
    assert model.source_run_id == first.mlflow_run_id
    rerun = client.get_run(second.mlflow_run_id)
    assert rerun.info.status == "FINISHED"
    assert [m.model_id for m in rerun.inputs.model_inputs] == [model.model_id]
    assert rerun.data.tags["training_logged_in"] == rerun.data.tags["data_logged_in"] == first.mlflow_run_id
    assert not client.list_artifacts(second.mlflow_run_id, "training")
    [version] = client.search_model_versions("name = 'captioner-three-runs'")
    assert version.run_id == first.mlflow_run_id
    assert rerun.data.tags["registered_model_version"] == "captioner-three-runs/1"
    assert client.get_model_version_by_alias("captioner-three-runs", "production").version == "1"


def test_a_failed_step_ends_its_run_failed_with_the_error(three_runs, client):
    _, second, error = three_runs
    experiment = client.get_experiment_by_name("three-runs").experiment_id
    runs = client.search_runs([experiment], order_by=["attributes.start_time DESC"])
    assert len(runs) == 3
    failed = runs[0]
    assert failed.info.status == "FAILED" and failed.info.run_id != second.mlflow_run_id
    assert failed.data.tags["failed_step"] == "CaptionPusher"
    assert failed.data.tags["error"].startswith("CaptionPusher: ") and type(error).__name__ in failed.data.tags["error"]


def test_a_run_that_fails_before_the_pipeline_starts_writes_nothing_to_mlflow(mlflow_server, client, tmp_path):
    from pipelines import local_runner

    config = smoke_config(tmp_path, **{
        "mlflow.tracking_uri": mlflow_server.uri,
        "mlflow.experiment": "failed-before-start",
    })
    config.data_dir.mkdir(parents=True)
    (config.data_dir / "notes.txt").write_text("not a dataset")  # data.synthetic refuses to replace it
    with pytest.raises(FileExistsError, match="not made by data.synthetic"):
        local_runner.run(config)
    assert client.get_experiment_by_name("failed-before-start") is None


def test_a_run_whose_ingestion_fails_ends_failed_with_the_ingestion_error(mlflow_server, client, tmp_path):
    """No step that logs has run yet, so the runner's exit handler creates the run to fail it."""
    from data.resolve import ensure_dataset
    from pipelines import local_runner
    from tracking.run_record import find_run_id

    config = smoke_config(tmp_path, **{
        "data.synthetic.num_images": 24,
        "mlflow.tracking_uri": mlflow_server.uri,
        "mlflow.experiment": "failed-ingestion",
    })
    data_dir = ensure_dataset(config)
    for image in sorted(data_dir.rglob("*.jpg"))[:3]:  # 3 of 24 unreadable: over the 1% allowed
        image.write_bytes(image.read_bytes()[:64])
    with pytest.raises(Exception) as failure:
        local_runner.run(config)
    assert "ingest.max_skipped_fraction" in str(failure.value)
    experiment = client.get_experiment_by_name("failed-ingestion")
    [failed] = client.search_runs([experiment.experiment_id])
    assert failed.info.status == "FAILED"
    assert failed.data.tags["failed_step"] == "pipeline"
    assert "ingest.max_skipped_fraction" in failed.data.tags["error"]
    assert failed.data.tags["pipeline_run_id"] == find_run_id(config.output_root / "metadata.db", config.pipeline.name)
    assert failed.info.run_name.startswith("smoke ")

"""The RunRecorder step against a real MLflow store (sqlite in a temporary directory), fed
artifacts laid out as the pipeline's steps write them: what a finished run holds in MLflow,
and what a rerun that reused everything from TFX's cache adds (no second model, no second
registry version). Also the gallery, signature and registry pieces it is made of."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from tests.test_tracking_unit import HISTORY, _predictions, _tiny_saved_model, _write_images

FINGERPRINT = "f" * 64


def _artifact(kind, uri: Path, **props):
    artifact = kind()
    artifact.uri = str(uri)
    uri.mkdir(parents=True, exist_ok=True)
    for key, value in props.items():
        (artifact.set_int_custom_property if isinstance(value, int) else
         artifact.set_float_custom_property if isinstance(value, float) else artifact.set_string_custom_property)(key, value)
    return artifact


@pytest.fixture
def outputs(tmp_path):
    """The upstream steps' outputs of one finished run: small files, as the steps write them."""
    from tfx.types import standard_artifacts as std

    from components.bleu_evaluator.component import CaptionEvaluation
    from components.flickr8k_example_gen.component import IngestionReport

    art = tmp_path / "tfx"
    report = _artifact(IngestionReport, art / "report")
    (art / "report" / "ingestion_report.json").write_text(json.dumps({
        "data_dir": str(tmp_path / "data"), "examples_per_split": {"train": 7, "dev": 3},
        "total_images": 11, "skipped_images": 1, "total_caption_lines": 55, "skipped_caption_lines": 2,
        "skipped_by_reason": {"image_corrupt": 1, "caption_empty": 2},
    }))
    schema = _artifact(std.Schema, art / "schema")
    (art / "schema" / "schema.pbtxt").write_text('feature { name: "captions" }\n')
    model = _artifact(std.Model, art / "model" / "7")
    _tiny_saved_model(art / "model" / "7" / "Format-Serving")
    model_run = _artifact(std.ModelRun, art / "model_run")
    (art / "model_run" / "history.json").write_text(json.dumps(HISTORY))
    predictions = _predictions(3)
    _write_images(tmp_path / "data" / "Flicker8k_Dataset", [p["image_id"] for p in predictions])
    evaluation = _artifact(CaptionEvaluation, art / "evaluation")
    (art / "evaluation" / "metrics.json").write_text(json.dumps({
        "bleu_1": 0.8, "bleu_2": 0.7, "bleu_3": 0.6, "bleu_4": 0.55, "meteor": None,
        "num_images": 3, "seconds": 1.5, "eval_split": "dev",
    }))
    (art / "evaluation" / "predictions.jsonl").write_text("\n".join(json.dumps(p) for p in predictions))
    Image.new("RGB", (40, 30), (200, 30, 30)).save(art / "evaluation" / "example.jpg", "JPEG")
    blessing = _artifact(std.ModelBlessing, art / "blessing", blessed=1, reason="blessed: bleu_4 0.55 >= 0.5", bleu_4=0.55)
    pushed = _artifact(std.PushedModel, art / "pushed", pushed=1, pushed_version=1,
                       pushed_destination="/serving/captioner/1", reason="pushed as version 1")
    return {"ingestion_report": [report], "schema": [schema], "model": [model], "model_run": [model_run],
            "evaluation": [evaluation], "blessing": [blessing], "pushed_model": [pushed],
            "statistics": [], "anomalies": [], "transform_graph": []}


def _record(tmp_path, inputs, pipeline_run_id: str):
    """Run the RunRecorder's executor for one pipeline run; its MlflowRun output's run id."""
    from tfx.dsl.components.base.base_executor import BaseExecutor
    from tfx.types import artifact_utils

    from components.run_recorder.component import MlflowRun
    from components.run_recorder.executor import Executor
    from components.tracked import encode
    from pipelines.pipeline import run_params
    from tests.runs import smoke_config
    from tracking.lifecycle import settings_of

    config = smoke_config(tmp_path / "out", **{"mlflow.experiment": "unit"})
    output = MlflowRun()
    output.uri = str(tmp_path / "mlflow_run" / pipeline_run_id)
    Executor(BaseExecutor.Context(pipeline_run_id=pipeline_run_id)).Do(inputs, {"mlflow_run": [output]}, {
        "tracking": encode(settings_of(config)),
        "params": json.dumps(run_params(config)),
        "config": json.dumps({"train": {"epochs": config.train.epochs}}),
        "dataset": json.dumps({"name": "synthetic", "source": str(tmp_path / "data"), "fingerprint": FINGERPRINT}),
        "registered_model": "captioner",
        "gallery_size": 2,
    })
    assert json.loads((Path(output.uri) / "mlflow_run.json").read_text())["run_id"] == output.get_string_custom_property("mlflow_run_id")
    return config, artifact_utils.get_single_instance([output]).get_string_custom_property("mlflow_run_id")


def test_a_finished_run_holds_config_data_scores_model_and_registry_version(tmp_path, outputs):
    from mlflow import MlflowClient

    config, run_id = _record(tmp_path, outputs, "2026-01-01T10:00:00")
    client = MlflowClient(tracking_uri=config.mlflow_tracking_uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["pipeline_status"] == "FINISHED"
    assert Path(run.info.artifact_uri.removeprefix("file://")).is_relative_to(tmp_path / "out" / "mlartifacts" / "unit")
    params = run.data.params
    assert params["train.epochs"] == str(config.train.epochs) and params["backbone"] == "efficientnet_lite0"
    assert params["data.splits"] == '["train", "dev", "test"]' and params["mlflow.tracking_uri"] == "null"
    assert (params["examples.train"], params["examples.dev"], params["images.skipped"]) == ("7", "3", "1")
    assert params["skipped.caption_empty"] == "2" and "vocabulary_size" not in params  # no transform graph
    tags = run.data.tags
    assert tags["pipeline_run_id"] == "2026-01-01T10:00:00" and tags["data_fingerprint"] == FINGERPRINT
    assert (tags["gate_decision"], tags["gate_reason"]) == ("blessed", "blessed: bleu_4 0.55 >= 0.5")
    assert (tags["pushed"], tags["pushed_version"], tags["pushed_destination"]) == ("true", "1", "/serving/captioner/1")
    assert "tracking_errors" not in tags and tags["mlflow.user"]
    [dataset] = run.inputs.dataset_inputs
    assert dataset.dataset.digest == FINGERPRINT[:36] and json.loads(dataset.dataset.source) == {"uri": str(tmp_path / "data")}
    assert json.loads(dataset.dataset.profile)["splits"] == {"train": 7, "dev": 3}
    # The Trainer and the evaluator did not log in this run (as if cached): filled in from their outputs.
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "val_loss")] == list(enumerate(HISTORY["val_loss"], start=1))
    assert run.data.metrics["bleu_4"] == 0.55 and "meteor" not in run.data.metrics
    files = {f.path for d in ("config", "data", "training", "evaluation") for f in client.list_artifacts(run_id, d)}
    assert {"config/config.json", "data/schema.pbtxt", "data/ingestion_report.json", "training/learning_curve.png",
            "evaluation/gallery.html"} <= files
    version = client.get_model_version_by_alias("captioner", "production")
    assert version.run_id == run_id and version.tags["pushed_version"] == "1" and version.tags["bleu_4"] == "0.55"


def test_the_logged_model_has_every_signature_output_and_a_jpeg_input_example(tmp_path, outputs):
    import mlflow
    from mlflow.models import Model

    from tracking.registry import using_tracking_uri

    config, run_id = _record(tmp_path, outputs, "2026-01-01T10:00:00")
    with using_tracking_uri(config.mlflow_tracking_uri):
        local = mlflow.artifacts.download_artifacts("models:/captioner@production", dst_path=str(tmp_path / "dl"))
        model = Model.load(local)
        assert [c.name for c in model.signature.outputs.inputs] == ["caption"]
        assert model.signature.params.to_dict()[0]["default"] == "serving_default"
        example = model.load_input_example(local)
        assert Image.open(__import__("io").BytesIO(example.iloc[0, 0])).format == "JPEG"
        loaded = mlflow.pyfunc.load_model("models:/captioner@production")
        assert list(loaded.predict(example)["caption"]) == [f"{len(example.iloc[0, 0])} bytes"]


def test_a_rerun_reusing_the_model_links_it_and_adds_no_copy_or_version(tmp_path, outputs):
    from mlflow import MlflowClient

    config, first = _record(tmp_path, outputs, "2026-01-01T10:00:00")
    _, second = _record(tmp_path, outputs, "2026-01-01T11:00:00")
    client = MlflowClient(tracking_uri=config.mlflow_tracking_uri)
    assert second != first
    experiment = client.get_run(first).info.experiment_id
    [model] = client.search_logged_models([experiment])  # one copy, logged by the first run
    assert model.source_run_id == first
    assert [m.model_id for m in client.get_run(second).inputs.model_inputs] == [model.model_id]
    assert len(client.search_model_versions("name = 'captioner'")) == 1
    assert client.get_model_version_by_alias("captioner", "production").run_id == first
    # The files of the reused steps stay in the first run; the second names it.
    rerun = client.get_run(second)
    for folder in ("data", "training", "evaluation"):
        assert rerun.data.tags[f"{folder}_logged_in"] == first and not client.list_artifacts(second, folder)
    # Their numbers are in both, so the runs compare side by side in the UI.
    assert rerun.data.metrics["bleu_4"] == 0.55 and len(client.get_metric_history(second, "loss")) == len(HISTORY["loss"])


def test_model_signature_is_the_union_of_the_serving_signatures_outputs():
    from tracking.registry import model_signature

    signature = model_signature({
        "greedy": {"caption": ("string", 0), "log_probability": ("float", 0)},
        "beam_search": {"caption": ("string", 0), "alternatives": ("string", 1), "scores": ("float", 1)},
        "attention": {"caption": ("string", 0), "attention": ("float", 2), "grid_size": ("integer", 1)},
    })
    columns = {c.name: c for c in signature.outputs.inputs}
    assert sorted(columns) == ["alternatives", "attention", "caption", "grid_size", "log_probability", "scores"]
    assert columns["caption"].required and not columns["scores"].required
    assert str(columns["attention"].type) == "Array(Array(float))"


def test_the_gallery_embeds_image_bytes_it_is_given(tmp_path):
    import io

    from tracking import report

    predictions = _predictions(2)
    buffer = io.BytesIO()
    Image.new("RGB", (50, 40), (10, 200, 10)).save(buffer, "JPEG")
    page = report.gallery_html(predictions, {"img_000": buffer.getvalue()}, tmp_path / "g.html", size=2).read_text()
    assert page.count('src="data:image/jpeg;base64,') == 1
    assert "image img_001.jpg not found in the evaluated examples" in page


def test_an_older_push_reused_from_the_cache_leaves_production_on_the_newer_version(tmp_path, outputs):
    from mlflow import MlflowClient
    from tfx.types import standard_artifacts as std

    config, first = _record(tmp_path, outputs, "2026-01-01T10:00:00")
    newer = dict(outputs, pushed_model=[_artifact(std.PushedModel, tmp_path / "tfx" / "pushed2", pushed=1, pushed_version=2,
                                                  pushed_destination="/serving/captioner/2", reason="pushed as version 2")],
                 model=[_artifact(std.Model, tmp_path / "tfx" / "model" / "8")])
    _tiny_saved_model(tmp_path / "tfx" / "model" / "8" / "Format-Serving")
    _record(tmp_path, newer, "2026-01-01T11:00:00")
    client = MlflowClient(tracking_uri=config.mlflow_tracking_uri)
    assert str(client.get_model_version_by_alias("captioner", "production").version) == "2"
    _record(tmp_path, outputs, "2026-01-01T12:00:00")  # the first push again, e.g. only the recorder reran
    assert str(client.get_model_version_by_alias("captioner", "production").version) == "2"
    assert len(client.search_model_versions("name = 'captioner'")) == 2

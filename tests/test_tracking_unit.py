"""MLflow tracking without a pipeline: report files, run records from a fake ML Metadata
store, the pyfunc wrapper on a tiny SavedModel. The recording steps: test_run_recorder.py."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from PIL import Image

from tests.runs import smoke_config
from tracking import report, run_record

HISTORY = {
    "loss": [2.0, 1.2, 0.8, 0.7],
    "val_loss": [2.1, 1.4, 1.0, 0.95],
    "accuracy": [0.2, 0.4, 0.6, 0.65],
    "val_accuracy": [0.18, 0.35, 0.5, 0.52],
}


def _predictions(n: int) -> list[dict]:
    return [
        {"image_id": f"img_{i:03d}", "caption": f"a red ball <b>{i}</b>", "references": [f"ref {i} one", f"ref {i} & two"]}
        for i in range(n)
    ]


def _write_images(directory: Path, ids: list[str]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for i, image_id in enumerate(ids):
        Image.new("RGB", (320 + i, 200), (i * 7 % 255, 90, 160)).save(directory / f"{image_id}.jpg", "JPEG")


# --- report -----------------------------------------------------------------------------

def test_learning_curve_is_a_png_with_both_panels(tmp_path):
    path = report.learning_curve_png(HISTORY, tmp_path / "curve.png", "run 1")
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.width > image.height  # loss and accuracy side by side


def test_learning_curve_without_accuracy_has_one_panel(tmp_path):
    path = report.learning_curve_png({"loss": [1.0, 0.5], "val_loss": [1.1, 0.7]}, tmp_path / "c.png")
    with Image.open(path) as image:
        assert image.format == "PNG"


def test_learning_curve_gets_a_bleu_panel_when_epochs_were_scored(tmp_path):
    """figsize is 5.5 inches a panel: three panels with select_by BLEU, two without."""
    scored = {**HISTORY, "val_bleu_1": [0.5, 0.6], "val_bleu_4": [0.1, 0.15]}
    widths = []
    for name, history in (("two.png", HISTORY), ("three.png", scored)):
        with Image.open(report.learning_curve_png(history, tmp_path / name)) as image:
            widths.append(image.width)
    assert widths[1] == pytest.approx(widths[0] * 3 / 2, abs=2)


def test_learning_curve_refuses_an_empty_history(tmp_path):
    with pytest.raises(ValueError, match="history has none"):
        report.learning_curve_png({"lr": [0.1]}, tmp_path / "c.png")


def test_gallery_embeds_thumbnails_and_escapes_captions(tmp_path):
    predictions = _predictions(30)
    images = tmp_path / "Flicker8k_Dataset"
    _write_images(images, [p["image_id"] for p in predictions[:-1]])  # the last image is missing
    html = report.gallery_html(predictions, images, tmp_path / "gallery.html", size=20).read_text()
    shown = report.pick_gallery(predictions, 20)
    assert len(shown) == 20 and shown == report.pick_gallery(list(reversed(predictions)), 20)
    embedded = re.findall(r'<img src="data:image/jpeg;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(embedded) == sum(1 for p in shown if p["image_id"] != "img_029")
    for p in shown:
        assert f"a red ball &lt;b&gt;{p['image_id'][-2:].lstrip('0') or '0'}&lt;/b&gt;" in html
    assert "<b>" not in html and "&amp; two" in html
    assert "src=\"http" not in html and "file://" not in html  # self-contained


def test_gallery_with_fewer_predictions_shows_them_all(tmp_path):
    predictions = _predictions(3)
    _write_images(tmp_path / "imgs", [p["image_id"] for p in predictions])
    html = report.gallery_html(predictions, tmp_path / "imgs", tmp_path / "g.html", size=20).read_text()
    assert html.count("<img ") == 3


def test_read_predictions_reads_jsonl(tmp_path):
    path = tmp_path / "predictions.jsonl"
    path.write_text("\n".join(json.dumps(p) for p in _predictions(4)) + "\n")
    assert report.read_predictions(path) == _predictions(4)


def _stats():
    from tensorflow_metadata.proto.v0 import statistics_pb2

    stats = statistics_pb2.DatasetFeatureStatisticsList()
    dataset = stats.datasets.add(num_examples=10)
    width = dataset.features.add(type=statistics_pb2.FeatureNameStatistics.INT)
    width.path.step.append("image/width")
    width.num_stats.common_stats.num_non_missing = 9
    width.num_stats.common_stats.num_missing = 1
    width.num_stats.common_stats.min_num_values = 1
    width.num_stats.common_stats.max_num_values = 1
    width.num_stats.common_stats.avg_num_values = 1.0
    width.num_stats.min, width.num_stats.max, width.num_stats.mean = 96, 256, 170.5
    captions = dataset.features.add(type=statistics_pb2.FeatureNameStatistics.STRING)
    captions.path.step.append("captions")
    captions.string_stats.common_stats.num_non_missing = 10
    captions.string_stats.common_stats.max_num_values = 5
    captions.string_stats.unique = 42
    captions.string_stats.avg_length = 31.25
    return stats


def test_statistics_summary_has_a_row_per_split_and_feature(tmp_path):
    rows = report.statistics_rows({"train": _stats(), "dev": _stats()})
    assert [(r["split"], r["feature"]) for r in rows] == [
        ("train", "image/width"), ("train", "captions"), ("dev", "image/width"), ("dev", "captions"),
    ]
    width = rows[0]
    assert (width["type"], width["count"], width["missing"], width["min"], width["max"], width["mean"]) == (
        "INT", 9, 1, 96.0, 256.0, 170.5,
    )
    assert (rows[1]["unique"], rows[1]["mean"], rows[1]["max_values"]) == (42, 31.25, 5)
    csv_text = report.statistics_csv(rows, tmp_path / "s.csv").read_text()
    assert csv_text.splitlines()[0].startswith("split,feature,type,count,missing,min,max,mean")
    assert len(csv_text.splitlines()) == 5
    markdown = report.statistics_markdown(rows)
    assert "## train" in markdown and "## dev" in markdown
    assert "| image/width | INT | 9 | 1 | 96.0 | 256.0 | 170.5 |" in markdown


def test_anomalies_summary_and_text():
    from tensorflow_metadata.proto.v0 import anomalies_pb2

    bad = anomalies_pb2.Anomalies()
    info = bad.anomaly_info["captions"]
    info.severity = anomalies_pb2.AnomalyInfo.ERROR
    info.short_description = "Superfluous values"
    info.description = "Some examples have more values than expected."
    summary = report.anomalies_summary({"train": bad, "dev": anomalies_pb2.Anomalies()})
    assert summary == {
        "dev": [],
        "train": [{
            "feature": "captions", "severity": "ERROR", "short_description": "Superfluous values",
            "description": "Some examples have more values than expected.",
        }],
    }
    text = report.anomalies_text(summary)
    assert "dev: no anomalies" in text and "train: captions: Superfluous values" in text


# --- run records from a fake ML Metadata store ------------------------------------------

class FakeMetadata:
    """A tiny ML Metadata store laid out the way LocalDagRunner records runs."""

    def __init__(self, path: Path, pipeline: str = "captioner-smoke"):
        from ml_metadata.metadata_store import metadata_store
        from ml_metadata.proto import metadata_store_pb2 as pb

        self.pb, self.path, self.pipeline = pb, path, pipeline
        config = pb.ConnectionConfig()
        config.sqlite.filename_uri = str(path)
        config.sqlite.connection_mode = pb.SqliteMetadataSourceConfig.READWRITE_OPENCREATE
        self.store = metadata_store.MetadataStore(config)
        self.types = {name: self.store.put_context_type(pb.ContextType(name=name))
                      for name in ("pipeline", "pipeline_run", "node")}
        self.pipeline_ctx = self._context("pipeline", pipeline)
        self.artifacts: dict[str, int] = {}

    def _context(self, type_name: str, name: str) -> int:
        [cid] = self.store.put_contexts([self.pb.Context(type_id=self.types[type_name], name=name)])
        return cid

    def artifact(self, type_name: str, uri: str, **custom) -> int:
        pb = self.pb
        type_id = self.store.put_artifact_type(pb.ArtifactType(name=type_name), can_add_fields=True)
        artifact = pb.Artifact(type_id=type_id, uri=uri, state=pb.Artifact.LIVE)
        for key, value in custom.items():
            if isinstance(value, int):
                artifact.custom_properties[key].int_value = value
            else:
                artifact.custom_properties[key].string_value = value
        [aid] = self.store.put_artifacts([artifact])
        return aid

    def run(self, run_id: str, executions: list[tuple[str, str, dict[str, int]]]) -> None:
        """executions: (node id, state name, {output key: artifact id})."""
        pb = self.pb
        run_ctx = self._context("pipeline_run", run_id)
        for node, state, outputs in executions:
            type_id = self.store.put_execution_type(pb.ExecutionType(name=f"tfx.components.{node}"))
            node_ctx = self.store.get_context_by_type_and_name("node", f"{self.pipeline}.{node}")
            node_id = node_ctx.id if node_ctx else self._context("node", f"{self.pipeline}.{node}")
            execution = pb.Execution(type_id=type_id, last_known_state=getattr(pb.Execution, state))
            pairs = []
            for key, aid in outputs.items():
                event = pb.Event(type=pb.Event.OUTPUT)
                event.path.steps.add().key = key
                event.path.steps.add().index = 0
                pairs.append((self.store.get_artifacts_by_id([aid])[0], event))
            contexts = self.store.get_contexts_by_id([self.pipeline_ctx, run_ctx, node_id])
            self.store.put_execution(execution, pairs, contexts)


def test_run_record_takes_outputs_by_key_skips_resolvers_and_counts_cached(tmp_path):
    fake = FakeMetadata(tmp_path / "metadata.db")
    a = {
        "report": fake.artifact("captioner.IngestionReport", "/r/report"),
        "stats": fake.artifact("ExampleStatistics", "/r/stats", split_names='["train", "dev"]'),
        "pre_stats": fake.artifact("ExampleStatistics", "/r/pre_stats"),
        "model": fake.artifact("Model", "/r/model/2"),
        "old_model": fake.artifact("Model", "/r/model/1"),
        "blessing": fake.artifact("ModelBlessing", "/r/blessing", blessed=1, reason="blessed: fine"),
        "pushed": fake.artifact("PushedModel", "/r/pushed", pushed=1, pushed_version=3, pushed_destination="/s/3"),
    }
    first = [
        ("Flickr8kExampleGen", "COMPLETE", {"report": a["report"]}),
        ("StatisticsGen", "COMPLETE", {"statistics": a["stats"]}),
        ("Transform", "COMPLETE", {"pre_transform_stats": a["pre_stats"]}),
        ("latest_blessed_model_resolver", "COMPLETE", {"model": a["old_model"]}),
        ("Trainer", "COMPLETE", {"model": a["model"]}),
        ("BleuEvaluator", "COMPLETE", {"blessing": a["blessing"]}),
        ("CaptionPusher", "COMPLETE", {"pushed_model": a["pushed"]}),
    ]
    fake.run("2026-01-01T10:00:00", first)
    fake.run("2026-01-01T11:00:00", [(node, "CACHED", outputs) for node, _, outputs in first])

    assert run_record.find_run_id(fake.path, "captioner-smoke") == "2026-01-01T11:00:00"
    assert run_record.find_run_id(fake.path, "another-pipeline") is None
    record = run_record.read_run_record(fake.path, "captioner-smoke", "2026-01-01T11:00:00")
    assert record.cached_nodes == [node for node, _, _ in first]
    assert record.statistics.uri == Path("/r/stats") and record.statistics.split_names == ["train", "dev"]
    assert record.model.uri == Path("/r/model/2") and record.model.producer == "Trainer"
    assert record.ingestion_report.uri == Path("/r/report")
    assert record.blessed is True and record.blessing.properties["reason"] == "blessed: fine"
    assert record.pushed is True and record.pushed_model.properties["pushed_version"] == 3
    assert record.evaluation is None and record.schema is None


def test_run_record_of_a_run_that_never_started(tmp_path):
    assert run_record.find_run_id(tmp_path / "none.db", "p") is None
    record = run_record.record_pipeline_run(tmp_path / "none.db", "p")
    assert record == run_record.RunRecord(pipeline_name="p")
    assert record.blessed is None and record.pushed is None and record.cached_nodes == []


# --- the pyfunc model and the logger, on a tiny SavedModel ------------------------------

def _tiny_saved_model(export_dir: Path) -> Path:
    """A SavedModel with the captioner's signature: images (bytes) -> caption "<n> bytes"."""
    import tensorflow as tf

    class Tiny(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="images")])
        def serve(self, images):
            return {"caption": tf.strings.join([tf.strings.as_string(tf.strings.length(images)), "bytes"], " ")}

    module = Tiny()
    tf.saved_model.save(module, str(export_dir), signatures={"serving_default": module.serve})
    return export_dir


@pytest.mark.filterwarnings("ignore:.*input example.*:UserWarning")
def test_pyfunc_model_captions_dataframes_lists_and_bytes(tmp_path):
    import mlflow
    import pandas as pd
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    from tracking import model as model_code

    export_dir = _tiny_saved_model(tmp_path / "Format-Serving")
    mlflow.pyfunc.save_model(
        str(tmp_path / "pyfunc"),
        python_model=model_code.__file__,
        artifacts={model_code.SAVED_MODEL_ARTIFACT: str(export_dir)},
        signature=ModelSignature(Schema([ColSpec("binary")]), Schema([ColSpec("string", "caption")])),
        pip_requirements=["mlflow", "tensorflow", "pandas"],
    )
    loaded = mlflow.pyfunc.load_model(str(tmp_path / "pyfunc"))
    images = [b"x" * 3, b"y" * 40]
    for model_input in (pd.DataFrame({"image": images}), images):
        assert list(loaded.predict(model_input)["caption"]) == ["3 bytes", "40 bytes"]
    assert list(loaded.predict(b"abcd")["caption"]) == ["4 bytes"]
    many = [b"z" * i for i in range(1, 71)]  # more than one batch of 32
    assert list(loaded.predict(many)["caption"]) == [f"{i} bytes" for i in range(1, 71)]


def test_ui_command_uses_the_profile_store(tmp_path):
    from tracking import ui

    config = smoke_config(tmp_path)
    command = ui.server_command(config, port=5123)
    assert command[1] == "server"
    assert command[command.index("--backend-store-uri") + 1] == f"sqlite:///{tmp_path}/mlflow.db"
    assert command[command.index("--default-artifact-root") + 1] == str(tmp_path / "mlartifacts")
    assert command[command.index("--host") + 1] == "127.0.0.1"
    assert command[command.index("--port") + 1] == "5123"


def test_mlflow_config_defaults_to_the_sqlite_store_under_the_output_root(tmp_path):
    from configs import ConfigError

    config = smoke_config(tmp_path)
    assert config.mlflow.tracking_uri is None
    assert config.mlflow_tracking_uri == f"sqlite:///{tmp_path}/mlflow.db"
    assert (config.mlflow.experiment, config.mlflow.registered_model, config.mlflow.gallery_size) == (
        "captioner", "captioner", 20,
    )
    server = smoke_config(tmp_path, **{"mlflow.tracking_uri": "http://127.0.0.1:5000"})
    assert server.mlflow_tracking_uri == "http://127.0.0.1:5000"
    with pytest.raises(ConfigError, match="gallery_size"):
        smoke_config(tmp_path, **{"mlflow.gallery_size": -1})
    with pytest.raises(ConfigError, match="unknown config key 'mlflow.server'"):
        smoke_config(tmp_path, **{"mlflow.server": "x"})

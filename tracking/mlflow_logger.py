"""Records one pipeline run as one MLflow run: params, metrics, tags, artifacts, the model.

Called by pipelines/local_runner.py after every run (`track_pipeline_run`), successful or
failed, and by the tests. What goes where (names are stable: dashboards and tests use them):

- params: the whole config flattened (`train.epochs`, ...), `backbone`, `vocabulary_size`,
  `examples.<split>`, `images.total|skipped`, `caption_lines.total|skipped`, `skipped.<reason>`
- metrics: `loss`, `val_loss`, `accuracy`, `val_accuracy` per epoch (step = epoch number, from 1, as the
  Trainer's log and the learning curve count),
  `epoch_seconds` per epoch, `epochs_trained`, `best_val_loss`, `train_seconds`; `bleu_1`..`bleu_4`, `cider`, the coco-caption scores (`coco_*`, `meteor`) when computed,
  `eval_num_images`, `eval_seconds`
- tags: `pipeline_name`, `pipeline_run_id`, `profile`, `data_fingerprint`, `cached_nodes`,
  `gate_decision` (blessed / not blessed), `gate_reason`, `pushed` (true / false),
  `pushed_version`, `pushed_destination`, `push_reason`; `error` when the run failed
- artifacts: config/, data/ (ingestion report, schema, anomalies, statistics summary),
  training/ (history, learning curve), evaluation/ (metrics, predictions, gallery)
- model: the serving SavedModel as the pyfunc model `model` (tracking/model.py); when the
  pipeline pushed it, a version of the registered model with the alias `production`.

Missing pieces (a failed run, a pipeline without evaluator or pusher) are skipped with a
warning; a piece that fails to log is named in the tag `tracking_errors` and the rest goes on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import io
import json
import logging
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Iterator

from configs import Config
from models.coco_caption import COCO_METRICS
from models.contract import (
    HISTORY_FILE,
    INGESTION_REPORT_FILE,
    METRICS_FILE,
    PREDICTIONS_FILE,
    SCHEMA_FILE,
    STATISTICS_FILE,
)
from tracking import live, report
from tracking.run_record import RunRecord, record_pipeline_run

log = logging.getLogger(__name__)

MODEL_NAME = "model"  # the logged model's name within the run
PRODUCTION_ALIAS = "production"
MAX_PARAM_CHARS = 6000
MAX_TAG_CHARS = 5000
PROGRESS_BAR_ENV = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
# Files inside the artifacts, as their producers write them.
HISTORY_METRICS = live.EPOCH_METRICS
EVAL_METRICS = {"bleu_1": "bleu_1", "bleu_2": "bleu_2", "bleu_3": "bleu_3", "bleu_4": "bleu_4",
                "cider": "cider", "num_images": "eval_num_images", "seconds": "eval_seconds",
                **{name: name for name in COCO_METRICS}}  # coco-caption's: coco_bleu_1.., meteor, ...


def track_pipeline_run(
    config: Config,
    metadata_path: Path,
    started_at: float,
    data_hash: str | None,
    error: BaseException | None = None,
) -> tuple[str | None, str | None]:
    """Find the run that started at `started_at` (epoch seconds) and log it to MLflow.

    Returns `(pipeline run id, MLflow run id)`. On a failed run (`error` given), a failure
    to log is itself only logged, so the pipeline's own error is the one the caller sees.
    """
    finished_at = time.time()
    try:
        record = record_pipeline_run(metadata_path, config.pipeline.name, since_ms=int(started_at * 1000) - 1000)
        status = "FAILED" if error is not None else "FINISHED"
        message = None if error is None else f"{type(error).__name__}: {error}"
        span = (started_at, finished_at)
        return record.run_id, log_pipeline_run(config, record, data_hash, status, message, span)
    except Exception:
        if error is None:
            raise
        log.exception("could not record the failed run in MLflow (%s)", config.mlflow_tracking_uri)
        return None, None


def log_pipeline_run(
    config: Config,
    record: RunRecord,
    data_hash: str | None,
    status: str,
    error: str | None = None,
    span: tuple[float, float] | None = None,
) -> str:
    """Log `record` as one MLflow run with the final `status` (FINISHED or FAILED); its id.

    `span`: the pipeline run's (start, end) in epoch seconds, so the UI's start time and
    duration are the pipeline's, not those of the few seconds of logging.
    """
    import mlflow

    started = time.monotonic()
    with using_tracking_uri(config.mlflow_tracking_uri):
        experiment_id = _experiment_id(config)
        run_name = f"{config.pipeline.name} {record.run_id or 'not started'}"
        with tempfile.TemporaryDirectory(prefix="mlflow-run-") as tmp:
            logger = _RunLogger(config, record, Path(tmp))
            client = mlflow.MlflowClient()
            start_ms = int(span[0] * 1000) if span else None
            # The run the Trainer opened to log its epochs live, if it did; else a new one.
            run_id = live.find_run(client, experiment_id, record.run_id) if record.run_id else None
            if run_id is None:
                run_id = client.create_run(experiment_id, start_time=start_ms, run_name=run_name).info.run_id
            run = mlflow.start_run(run_id)
            try:
                logger.log_all(data_hash, status, error)
            finally:
                mlflow.end_run(status=status)
                if span:
                    client.set_terminated(run.info.run_id, status, end_time=int(span[1] * 1000))
    log.info(
        "MLflow run %s (%s) of pipeline run %s logged to %s in %.1f s",
        run.info.run_id, status, record.run_id, config.mlflow_tracking_uri, time.monotonic() - started,
    )
    return run.info.run_id


@contextlib.contextmanager
def using_tracking_uri(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API at `uri` for the block, then restore what was set before."""
    import mlflow

    # Public API only: None means "nothing set", and set_tracking_uri(None) restores exactly that
    # (it also unsets MLFLOW_TRACKING_URI, which set_tracking_uri(uri) exported for subprocesses).
    previous = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    previous_bar = os.environ.get(PROGRESS_BAR_ENV)
    mlflow.set_tracking_uri(uri)
    os.environ[PROGRESS_BAR_ENV] = "false"  # no tqdm bars in the pipeline's log
    try:
        yield
    finally:
        if previous_bar is None:
            os.environ.pop(PROGRESS_BAR_ENV, None)
        else:
            os.environ[PROGRESS_BAR_ENV] = previous_bar
        mlflow.set_tracking_uri(previous)


def _experiment_id(config: Config) -> str:
    """The experiment of the config, created when missing. With a sqlite store (no server to
    decide), its artifacts go beside the database: `<db dir>/mlartifacts/<experiment>`."""
    from mlflow import MlflowClient

    return live.experiment_id(MlflowClient(), config.mlflow.experiment, live.settings_of(config).artifact_location)


class _RunLogger:
    """Logs the parts of one record into the active MLflow run, each part on its own."""

    def __init__(self, config: Config, record: RunRecord, tmp: Path):
        self.config, self.record, self.tmp = config, record, tmp
        self.errors: list[str] = []

    @contextlib.contextmanager
    def part(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
            log.debug("MLflow: %s took %.1f s", name, time.monotonic() - started)
        except Exception as e:  # noqa: BLE001 - one bad part must not lose the whole record
            log.warning("MLflow: could not log %s: %s: %s", name, type(e).__name__, e, exc_info=True)
            self.errors.append(f"{name}: {type(e).__name__}: {e}")

    def missing(self, what: str) -> None:
        log.warning("MLflow: pipeline run %s has no %s; not logged", self.record.run_id, what)

    def file(self, relative: str) -> Path:
        path = self.tmp / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def log_all(self, data_hash: str | None, status: str, error: str | None) -> None:
        import mlflow

        with self.part("tags"):
            mlflow.set_tags(self.tags(data_hash, status, error))
        with self.part("params"):
            mlflow.log_params(self.params())
        with self.part("config"):
            self.file("config/config.json").write_text(
                json.dumps(dataclasses.asdict(self.config), indent=2, default=str)
            )
        with self.part("data artifacts"):
            self.data_artifacts()
        with self.part("training history"):
            self.training()
        evaluation = None
        with self.part("evaluation"):
            evaluation = self.evaluation()
        if self.tmp.exists() and any(self.tmp.iterdir()):
            with self.part("artifacts"):
                mlflow.log_artifacts(str(self.tmp))
        model_info = None
        with self.part("model"):
            model_info = self.model()
        with self.part("registry"):
            self.register(model_info, evaluation)
        with self.part("description"):
            mlflow.set_tag("mlflow.note.content", self.description(status, error, evaluation))
        if self.errors:
            mlflow.set_tag("tracking_errors", _clip("\n".join(self.errors), MAX_TAG_CHARS))

    # --- tags and params ----------------------------------------------------------------

    def tags(self, data_hash: str | None, status: str, error: str | None) -> dict[str, str]:
        r = self.record
        tags = {
            "pipeline_name": r.pipeline_name,
            "pipeline_run_id": r.run_id or "",
            "profile": self.config.profile,
            "pipeline_status": status,
            "cached_nodes": ",".join(r.cached_nodes),
        }
        if data_hash:
            tags["data_fingerprint"] = data_hash
        if error:
            tags["error"] = _clip(error, MAX_TAG_CHARS)
        if r.blessing is not None:
            tags["gate_decision"] = "blessed" if r.blessed else "not blessed"
            tags["gate_reason"] = _clip(str(r.blessing.properties.get("reason", "")), MAX_TAG_CHARS)
        else:
            self.missing("ModelBlessing (gate decision)")
        if r.pushed_model is not None:
            p = r.pushed_model.properties
            tags["pushed"] = "true" if r.pushed else "false"
            for key in ("pushed_version", "pushed_destination"):
                if p.get(key) is not None:
                    tags[key] = str(p[key])
            if p.get("reason"):
                tags["push_reason"] = _clip(str(p["reason"]), MAX_TAG_CHARS)
        else:
            self.missing("PushedModel (push status)")
        return tags

    def params(self) -> dict[str, str]:
        params = {k: _clip(_param(v), MAX_PARAM_CHARS) for k, v in self.config.to_flat_dict().items()}
        params["backbone"] = self.config.features.backbone
        with self.part("data counts"):
            params.update(self.data_counts())
        with self.part("vocabulary size"):
            size = self.vocabulary_size()
            if size is not None:
                params["vocabulary_size"] = str(size)
        return params

    def data_counts(self) -> dict[str, str]:
        if self.record.ingestion_report is None:
            self.missing("IngestionReport (data counts)")
            return {}
        rep = json.loads((self.record.ingestion_report.uri / INGESTION_REPORT_FILE).read_text())
        counts = {f"examples.{split}": n for split, n in rep.get("examples_per_split", {}).items()}
        counts.update({
            "images.total": rep.get("total_images"),
            "images.skipped": rep.get("skipped_images"),
            "caption_lines.total": rep.get("total_caption_lines"),
            "caption_lines.skipped": rep.get("skipped_caption_lines"),
        })
        counts.update({f"skipped.{reason}": n for reason, n in rep.get("skipped_by_reason", {}).items()})
        return {k: str(v) for k, v in counts.items() if v is not None}

    def vocabulary_size(self) -> int | None:
        if self.record.transform_graph is None:
            self.missing("TransformGraph (vocabulary size)")
            return None
        import tensorflow_transform as tft

        from models.vocabulary import load_vocabulary

        return len(load_vocabulary(tft.TFTransformOutput(str(self.record.transform_graph.uri))))

    # --- artifacts ----------------------------------------------------------------------

    def data_artifacts(self) -> None:
        r = self.record
        if r.ingestion_report is not None:
            self.file(f"data/{INGESTION_REPORT_FILE}").write_bytes(
                (r.ingestion_report.uri / INGESTION_REPORT_FILE).read_bytes()
            )
        if r.schema is not None:
            self.file(f"data/{SCHEMA_FILE}").write_bytes((r.schema.uri / SCHEMA_FILE).read_bytes())
        else:
            self.missing("Schema")
        with self.part("anomalies"):
            if r.anomalies is None:
                self.missing("ExampleAnomalies")
            else:
                from data.anomalies import read_anomalies

                summary = report.anomalies_summary(read_anomalies(r.anomalies.uri, r.anomalies.split_names))
                self.file("data/anomalies.json").write_text(json.dumps(summary, indent=2))
                self.file("data/anomalies.txt").write_text(report.anomalies_text(summary))
        with self.part("statistics summary"):
            if r.statistics is None:
                self.missing("ExampleStatistics")
            else:
                import tensorflow_data_validation as tfdv

                stats = {
                    split: tfdv.load_stats_binary(str(r.statistics.uri / f"Split-{split}" / STATISTICS_FILE))
                    for split in r.statistics.split_names
                }
                rows = report.statistics_rows(stats)
                report.statistics_csv(rows, self.file("data/statistics.csv"))
                self.file("data/statistics.md").write_text(
                    report.statistics_markdown(rows, f"Statistics of {self.record.pipeline_name} {self.record.run_id}")
                )

    def training(self) -> None:
        import mlflow
        from mlflow.entities import Metric

        if self.record.model_run is None:
            self.missing("ModelRun (training history)")
            return
        history_path = self.record.model_run.uri / HISTORY_FILE
        history = json.loads(history_path.read_text())
        now = int(time.time() * 1000)
        run_id = mlflow.active_run().info.run_id
        client = mlflow.MlflowClient()
        # The Trainer logged the epochs live (each at its end): back-fill only what it did not.
        metrics = [
            Metric(key, float(value), now, epoch)
            for key in HISTORY_METRICS
            if not live.has_metric(client, run_id, key)
            for epoch, value in enumerate(history.get(key) or [], start=1)
        ]
        for start in range(0, len(metrics), 1000):  # log_batch takes at most 1000 metrics
            client.log_batch(run_id, metrics=metrics[start : start + 1000])
        if history.get("loss"):
            mlflow.log_metric("epochs_trained", len(history["loss"]))
        if history.get("val_loss"):
            mlflow.log_metric("best_val_loss", min(history["val_loss"]))
        if history.get("epoch_seconds"):
            mlflow.log_metric("train_seconds", float(sum(history["epoch_seconds"])))
        self.file(f"training/{HISTORY_FILE}").write_text(history_path.read_text())
        report.learning_curve_png(
            history, self.file("training/learning_curve.png"), f"{self.record.pipeline_name} {self.record.run_id}"
        )

    def evaluation(self) -> dict[str, Any] | None:
        import mlflow

        ev = self.record.evaluation
        if ev is None:
            self.missing("CaptionEvaluation (BLEU, METEOR, gallery)")
            return None
        metrics = json.loads((ev.uri / METRICS_FILE).read_text())
        mlflow.log_metrics({
            name: float(metrics[key]) for key, name in EVAL_METRICS.items() if metrics.get(key) is not None
        })
        self.file(f"evaluation/{METRICS_FILE}").write_text(json.dumps(metrics, indent=2))
        predictions_path = ev.uri / PREDICTIONS_FILE
        if predictions_path.is_file():
            self.file(f"evaluation/{PREDICTIONS_FILE}").write_bytes(predictions_path.read_bytes())
            with self.part("gallery"):
                self.gallery(report.read_predictions(predictions_path), metrics)
        else:
            self.missing(PREDICTIONS_FILE)
        return metrics

    def gallery(self, predictions: list[dict[str, Any]], metrics: dict[str, Any]) -> None:
        data_dir = self.config.data_dir
        if self.record.ingestion_report is not None:  # the directory that was really ingested
            rep = json.loads((self.record.ingestion_report.uri / INGESTION_REPORT_FILE).read_text())
            data_dir = Path(rep.get("data_dir") or data_dir)
        scores = ", ".join(
            f"{k.upper().replace('_', '-')} {metrics[k]:.3f}" for k in ("bleu_1", "bleu_4", "meteor")
            if isinstance(metrics.get(k), (int, float))
        )
        report.gallery_html(
            predictions,
            data_dir / "Flicker8k_Dataset",
            self.file("evaluation/gallery.html"),
            size=self.config.mlflow.gallery_size,
            title=f"{self.record.pipeline_name}: generated captions",
            subtitle=f"Pipeline run {self.record.run_id}; split {metrics.get('eval_split', '?')} "
            f"({len(predictions)} images; {scores}). Bold: generated caption; list: references.",
        )

    # --- model and registry -------------------------------------------------------------

    def model(self):
        from tfx.utils import path_utils

        if self.record.model is None:
            self.missing("Model (the logged MLflow model)")
            return None
        export_dir = Path(path_utils.serving_model_path(str(self.record.model.uri)))
        if not (export_dir / "saved_model.pb").is_file():
            self.missing(f"serving SavedModel in {export_dir}")
            return None
        from tracking import model as model_code

        with warnings.catch_warnings():  # the signature is explicit; no input example needed
            warnings.filterwarnings("ignore", message=".*input example.*", category=UserWarning)
            return self._log_pyfunc(export_dir, model_code)

    def _log_pyfunc(self, export_dir: Path, model_code):
        import mlflow
        from mlflow.models import ModelSignature
        from mlflow.types import ColSpec, Schema

        return mlflow.pyfunc.log_model(
            name=MODEL_NAME,
            python_model=str(Path(model_code.__file__)),
            artifacts={model_code.SAVED_MODEL_ARTIFACT: str(export_dir)},
            signature=ModelSignature(
                # One unnamed bytes column: a DataFrame of any column name, a list of bytes
                # or one bytes value all pass MLflow's schema check.
                inputs=Schema([ColSpec("binary")]),
                outputs=Schema([ColSpec("string", "caption")]),
            ),
            pip_requirements=[
                f"{pkg}=={importlib.metadata.version(pkg)}" for pkg in ("mlflow", "tensorflow", "pandas")
            ],
            tags={"pipeline_run_id": self.record.run_id or "", "tfx_model_uri": str(self.record.model.uri)},
        )

    def register(self, model_info, evaluation: dict[str, Any] | None) -> None:
        """A pushed model becomes (or already is) a registry version with the production alias."""
        import mlflow

        r = self.record
        if not r.pushed:
            if r.pushed_model is not None:
                log.info("MLflow: pipeline run %s pushed nothing; the registry is unchanged", r.run_id)
            return
        props = r.pushed_model.properties
        pushed = {"pushed_version": str(props.get("pushed_version", "")),
                  "pushed_destination": str(props.get("pushed_destination", ""))}
        name = self.config.mlflow.registered_model
        client = mlflow.MlflowClient()
        existing = [
            v for v in _model_versions(client, name)
            if all(v.tags.get(k) == value for k, value in pushed.items())
        ]
        if existing:  # e.g. a cached rerun: the very push this version records
            version = max(existing, key=lambda v: int(v.version))
            log.info("MLflow: push %s is already %s version %s", pushed["pushed_version"], name, version.version)
        elif model_info is None:
            raise RuntimeError("the run pushed a model, but it could not be logged, so it is not registered")
        else:
            tags = {**pushed, "pipeline_run_id": r.run_id or ""}
            if evaluation and evaluation.get("bleu_4") is not None:
                tags["bleu_4"] = str(evaluation["bleu_4"])
            with contextlib.redirect_stderr(io.StringIO()):  # MLflow prints what the next line logs
                version = mlflow.register_model(model_info.model_uri, name, tags=tags)
        client.set_registered_model_alias(name, PRODUCTION_ALIAS, version.version)
        mlflow.set_tag("registered_model_version", f"{name}/{version.version}")
        log.info("MLflow: %s@%s -> version %s", name, PRODUCTION_ALIAS, version.version)

    def description(self, status: str, error: str | None, evaluation: dict[str, Any] | None) -> str:
        r = self.record
        lines = [f"**{r.pipeline_name}** pipeline run `{r.run_id}`: {status}."]
        if error:
            lines.append(f"Error: `{_clip(error, 500)}`")
        if evaluation:
            lines.append(f"BLEU-4 {evaluation.get('bleu_4', float('nan')):.4f} on {evaluation.get('num_images')} images.")
        if r.blessing is not None:
            lines.append(f"Gate: {r.blessing.properties.get('reason', '')}")
        if r.pushed_model is not None:
            lines.append(
                f"Pushed as version {r.pushed_model.properties.get('pushed_version')}."
                if r.pushed else f"Not pushed: {r.pushed_model.properties.get('reason', '')}"
            )
        if r.cached_nodes:
            lines.append(f"Reused from the TFX cache: {', '.join(r.cached_nodes)}.")
        return "\n\n".join(lines)


def _model_versions(client, name: str) -> list:
    from mlflow.exceptions import MlflowException

    try:
        return list(client.search_model_versions(f"name = '{name}'"))
    except MlflowException:
        return []


def _param(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return json.dumps(list(value))
    return "null" if value is None else str(value)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 15] + "… (truncated)"

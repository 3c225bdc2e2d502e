"""TFX glue for RunRecorder: every step's outputs into the pipeline run's MLflow run, then FINISHED.

Each part is logged on its own: one that fails is a warning and a line in the run's tag
`tracking_errors`, and the rest goes on. A tracking server that cannot be reached at all
fails the step (after the push): TFX does not cache a failed step, so rerunning the
pipeline, everything else from the cache, completes the record. What a step logged itself while it ran (the
Trainer's epochs, the evaluator's scores) is not logged again; what a step reused from
TFX's cache did not log in this run, so it is filled in here from its outputs. The model is
logged once per TFX model (tracking/registry.py).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Iterator

from tfx import types
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.utils import path_utils

from components import tracked
from components.tracked import from_parameter, records_failures
from models.contract import (
    EXAMPLE_IMAGE_FILE,
    HISTORY_FILE,
    INGESTION_REPORT_FILE,
    METRICS_FILE,
    MLFLOW_RUN_FILE,
    PREDICTIONS_FILE,
)
from tracking import artifacts, lifecycle, metrics, registry, report

log = logging.getLogger(__name__)


class Executor(base_executor.BaseExecutor):
    @records_failures(from_parameter)
    def Do(
        self,
        input_dict: dict[str, list[types.Artifact]],
        output_dict: dict[str, list[types.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        output = artifact_utils.get_single_instance(output_dict["mlflow_run"])
        settings = tracked.settings_of(from_parameter(exec_properties), self._context)
        record = {"tracking_uri": None, "run_id": None}
        if settings is not None:
            started = time.monotonic()
            client, run_id = tracked.open_run(settings)
            inputs = {key: artifact_utils.get_single_instance(value) for key, value in input_dict.items() if value}
            _Recorder(client, run_id, settings, inputs, exec_properties).record()
            record = {"tracking_uri": settings.tracking_uri, "run_id": run_id}
            output.set_string_custom_property("mlflow_run_id", run_id)
            log.info("MLflow: run %s of pipeline run %s recorded in %s in %.1f s",
                     run_id, settings.pipeline_run_id, settings.tracking_uri, time.monotonic() - started)
        else:
            log.info("RunRecorder: no tracking settings; nothing recorded")
        os.makedirs(output.uri, exist_ok=True)
        Path(output.uri, MLFLOW_RUN_FILE).write_text(json.dumps(record, indent=2))


class _Recorder:
    def __init__(self, client, run_id: str, settings: lifecycle.TrackingSettings,
                 inputs: dict[str, types.Artifact], exec_properties: dict[str, Any]):
        self.client, self.run_id, self.settings, self.inputs = client, run_id, settings, inputs
        self.params = json.loads(exec_properties.get("params") or "{}")
        self.config = json.loads(exec_properties.get("config") or "{}")
        self.dataset = json.loads(exec_properties.get("dataset") or "{}")
        self.registered_model = exec_properties.get("registered_model") or ""
        self.gallery_size = int(exec_properties.get("gallery_size") or 0)
        self.title = f"{settings.pipeline_name} {settings.pipeline_run_id}"
        self.errors: list[str] = []

    @contextlib.contextmanager
    def part(self, name: str) -> Iterator[None]:
        try:
            yield
        except Exception as e:  # noqa: BLE001 - one bad part must not lose the whole record
            log.warning("MLflow: could not log %s: %s: %s", name, type(e).__name__, e, exc_info=True)
            self.errors.append(f"{name}: {type(e).__name__}: {e}")

    def uri(self, key: str) -> Path | None:
        artifact = self.inputs.get(key)
        return None if artifact is None else Path(artifact.uri)

    def record(self) -> None:
        report_json = None
        if self.uri("ingestion_report") is not None:
            report_json = json.loads((self.uri("ingestion_report") / INGESTION_REPORT_FILE).read_text())
        with self.part("tags"):
            self.client.set_tag(self.run_id, "data_fingerprint", self.dataset.get("fingerprint", ""))
            for key, value in self.outcome_tags().items():
                self.client.set_tag(self.run_id, key, value)
        with self.part("params"):
            self.log_params(report_json)
        with self.part("config"):
            artifacts.log_config(self.client, self.run_id, self.config)
        with self.part("dataset"):
            metrics.log_dataset(self.client, self.run_id, self.dataset.get("name", "dataset"),
                                self.dataset.get("fingerprint", ""), self.dataset.get("source", ""), report_json)
        with self.part("data artifacts"):
            self.log_data()
        with self.part("training history"):
            self.log_training()
        with self.part("evaluation"):
            self.log_evaluation(report_json)
        model_uri = None
        with self.part("model"):
            model_uri = self.log_model()
        with self.part("registry"):
            self.register(model_uri)
        with self.part("description"):
            self.client.set_tag(self.run_id, "mlflow.note.content", self.description())
        if self.errors:
            self.client.set_tag(self.run_id, "tracking_errors", lifecycle.clip("\n".join(self.errors), lifecycle.MAX_TAG_CHARS))
        lifecycle.finish_run(self.client, self.run_id)

    # --- tags and params ----------------------------------------------------------------

    def outcome_tags(self) -> dict[str, str]:
        tags = {}
        blessing, pushed = self.inputs.get("blessing"), self.inputs.get("pushed_model")
        if blessing is not None:
            tags.update(lifecycle.gate_tags(blessing.get_int_custom_property("blessed") == 1,
                                            blessing.get_string_custom_property("reason")))
        if pushed is not None:
            tags["pushed"] = "true" if pushed.get_int_custom_property("pushed") == 1 else "false"
            if tags["pushed"] == "true":
                tags["pushed_version"] = str(pushed.get_int_custom_property("pushed_version"))
                tags["pushed_destination"] = pushed.get_string_custom_property("pushed_destination")
            reason = pushed.get_string_custom_property("reason")
            if reason:
                tags["push_reason"] = lifecycle.clip(reason, lifecycle.MAX_TAG_CHARS)
        return tags

    def log_params(self, report_json: dict | None) -> None:
        params = dict(self.params)
        if report_json is not None:
            params.update(metrics.ingestion_params(report_json))
        if self.uri("transform_graph") is not None:
            import tensorflow_transform as tft

            from models.vocabulary import load_vocabulary

            params["vocabulary_size"] = len(load_vocabulary(tft.TFTransformOutput(str(self.uri("transform_graph")))))
        # What a step logged itself stays (the Trainer logs its sections, paths resolved).
        known = self.client.get_run(self.run_id).data.params
        metrics.log_params(self.client, self.run_id, {k: v for k, v in params.items() if k not in known})

    # --- artifacts ----------------------------------------------------------------------

    def log_data(self) -> None:
        source = self.inputs.get("statistics") or self.inputs.get("ingestion_report")
        if source is None or artifacts.logged_before(self.client, self.run_id, artifacts.DATA_DIR, source.uri):
            return

        def split_artifact(key: str):
            artifact = self.inputs.get(key)
            return None if artifact is None else (Path(artifact.uri), artifact_utils.decode_split_names(artifact.split_names))

        artifacts.log_data(self.client, self.run_id, self.title, ingestion_report=self.uri("ingestion_report"),
                           schema=self.uri("schema"), anomalies=split_artifact("anomalies"),
                           statistics=split_artifact("statistics"))
        artifacts.mark_logged(self.client, self.run_id, artifacts.DATA_DIR, source.uri)

    def log_training(self) -> None:
        """What the Trainer did not log in this run (it was cached, or its server failed): the
        per-epoch values, and the files unless an earlier run has them."""
        folder = self.uri("model_run")
        if folder is None or not (folder / HISTORY_FILE).is_file():
            return
        history = json.loads((folder / HISTORY_FILE).read_text())
        metrics.log_history(self.client, self.run_id, history)
        if not artifacts.logged_before(self.client, self.run_id, artifacts.TRAINING_DIR, str(folder)):
            artifacts.log_training(self.client, self.run_id, history, self.title)
            artifacts.mark_logged(self.client, self.run_id, artifacts.TRAINING_DIR, str(folder))

    def log_evaluation(self, report_json: dict | None) -> None:
        """What the evaluator did not log in this run (it was cached): its scores, and its
        files unless an earlier run has them, the gallery from the ingested directory."""
        folder = self.uri("evaluation")
        if folder is None:
            return
        scores = json.loads((folder / METRICS_FILE).read_text())
        if not metrics.has_metric(self.client, self.run_id, "bleu_4"):
            metrics.log_values(self.client, self.run_id, metrics.evaluation_values(scores))
        if artifacts.logged_before(self.client, self.run_id, artifacts.EVALUATION_DIR, str(folder)):
            return
        predictions = report.read_predictions(folder / PREDICTIONS_FILE) if (folder / PREDICTIONS_FILE).is_file() else []
        data_dir = Path((report_json or {}).get("data_dir") or self.dataset.get("source", "."))
        artifacts.log_evaluation(self.client, self.run_id, scores, predictions, data_dir / "Flicker8k_Dataset",
                                 self.gallery_size, self.title)
        artifacts.mark_logged(self.client, self.run_id, artifacts.EVALUATION_DIR, str(folder))

    # --- model and registry -------------------------------------------------------------

    def log_model(self) -> str | None:
        """The model's URI in MLflow: logged now, or the one logged for this TFX model before."""
        import mlflow
        from mlflow.entities import LoggedModelInput

        model = self.inputs.get("model")
        if model is None:
            return None
        experiment = self.client.get_run(self.run_id).info.experiment_id
        earlier = registry.find_logged_model(self.client, experiment, model.uri)
        if earlier is not None:  # reused from TFX's cache: link it, do not copy it again
            self.client.log_inputs(self.run_id, models=[LoggedModelInput(earlier.model_id)])
            self.client.set_tag(self.run_id, "logged_model", f"{earlier.model_id} (from run {earlier.source_run_id})")
            return earlier.model_uri
        export_dir = Path(path_utils.serving_model_path(model.uri))
        example = None
        if self.uri("evaluation") is not None and (self.uri("evaluation") / EXAMPLE_IMAGE_FILE).is_file():
            example = (self.uri("evaluation") / EXAMPLE_IMAGE_FILE).read_bytes()
        tags = {"pipeline_run_id": self.settings.pipeline_run_id or "", registry.MODEL_URI_TAG: model.uri}
        with registry.using_tracking_uri(self.settings.tracking_uri):
            mlflow.start_run(run_id=self.run_id)
            try:
                info = registry.log_model(export_dir, tags, example)
            finally:
                mlflow.end_run()
                # end_run marks the run FINISHED: it is not, until finish_run at the very end.
                self.client.update_run(self.run_id, status="RUNNING")
        self.client.set_tag(self.run_id, "logged_model", info.model_id)
        return info.model_uri

    def register(self, model_uri: str | None) -> None:
        pushed = self.inputs.get("pushed_model")
        if pushed is None or pushed.get_int_custom_property("pushed") != 1 or not self.registered_model:
            return
        if model_uri is None:
            raise RuntimeError("the run pushed a model, but it could not be logged, so it is not registered")
        push = {"pushed_version": str(pushed.get_int_custom_property("pushed_version")),
                "pushed_destination": pushed.get_string_custom_property("pushed_destination")}
        tags = {"pipeline_run_id": self.settings.pipeline_run_id or ""}
        blessing = self.inputs.get("blessing")
        if blessing is not None and blessing.has_custom_property("bleu_4"):
            tags["bleu_4"] = str(blessing.get_float_custom_property("bleu_4"))
        with registry.using_tracking_uri(self.settings.tracking_uri):
            version = registry.register_push(self.client, self.registered_model, model_uri, push, tags)
        self.client.set_tag(self.run_id, "registered_model_version", f"{self.registered_model}/{version}")

    def description(self) -> str:
        lines = [f"**{self.settings.pipeline_name}** pipeline run `{self.settings.pipeline_run_id}`: FINISHED."]
        blessing, pushed = self.inputs.get("blessing"), self.inputs.get("pushed_model")
        if blessing is not None and blessing.has_custom_property("bleu_4"):
            lines.append(f"BLEU-4 {blessing.get_float_custom_property('bleu_4'):.4f}.")
        if blessing is not None:
            lines.append(f"Gate: {blessing.get_string_custom_property('reason')}")
        if pushed is not None:
            lines.append(
                f"Pushed as version {pushed.get_int_custom_property('pushed_version')}."
                if pushed.get_int_custom_property("pushed") == 1
                else f"Not pushed: {pushed.get_string_custom_property('reason')}"
            )
        return "\n\n".join(lines)

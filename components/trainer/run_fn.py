"""The Trainer's run_fn: models/trainer.run_fn, recorded in the pipeline run's MLflow run
while it trains (when the pipeline has tracking settings): the training's params when it
starts, each epoch's metrics as the epoch ends, system metrics (CPU, memory) meanwhile,
and the history and learning curve at the end.

The tracking settings travel in custom_config (components/trainer/executor.py adds the
pipeline run id); they are taken out before models/trainer.py reads its own sections.
A tracking server that fails is logged and skipped: it never stops a training.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import keras

from components.trainer.executor import TRACKING_KEY
from models import trainer
from models.contract import HISTORY_FILE
from tracking import artifacts, lifecycle, metrics

log = logging.getLogger(__name__)

# What goes to MLflow as each epoch ends: the history's per-epoch values (epoch_seconds
# measured here) and the learning rate.
LIVE_METRICS = (*metrics.EPOCH_METRICS, "learning_rate")
SYSTEM_METRICS_INTERVAL_S = 10.0


def run_fn(fn_args: Any) -> None:
    """TFX Trainer entry point (`run_fn="components.trainer.run_fn.run_fn"`)."""
    custom_config = dict(fn_args.custom_config or {})
    tracking = custom_config.pop(TRACKING_KEY, None)
    fn_args.custom_config = custom_config
    settings = lifecycle.TrackingSettings.from_dict(tracking) if tracking and tracking.get("pipeline_run_id") else None
    if settings is None:
        trainer.run_fn(fn_args)
        return
    recorder = LiveTraining(settings, _flat_params(custom_config))
    trainer.run_fn(fn_args, extra_callbacks=[recorder])
    recorder.log_history(Path(fn_args.model_run_dir))
    # Which runs trained it, for the model card.
    trainer.write_training_facts(fn_args.serving_model_dir, {
        "pipeline_run_id": settings.pipeline_run_id, "mlflow_run_id": recorder.run_id,
    })


def _flat_params(sections: dict[str, Any]) -> dict[str, Any]:
    """`section.key -> value` of the Trainer's sections, the names the whole config uses."""
    return {f"{section}.{key}": value for section, values in sections.items() for key, value in values.items()}


class LiveTraining(keras.callbacks.Callback):
    """Logs a training into the pipeline run's MLflow run (found or created when training
    starts): its params, each finished epoch (step = epoch number from 1, timestamp = its
    end), system metrics while it runs; any tracking error is a warning, not a failure."""

    def __init__(self, settings: lifecycle.TrackingSettings, params: dict[str, Any]):
        super().__init__()
        self.settings, self.params_to_log = settings, params
        self.client = None
        self.run_id: str | None = None
        self._system = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        import mlflow

        try:
            self.client = mlflow.MlflowClient(self.settings.tracking_uri)
            self.run_id = lifecycle.find_or_create_run(self.client, self.settings)
            log.info("MLflow: logging the epochs live into run %s (%s)", self.run_id, self.settings.tracking_uri)
        except Exception as e:  # noqa: BLE001 - tracking must not stop the training
            log.warning("MLflow: no live epoch metrics (%s: %s)", type(e).__name__, e)
            self.run_id = None
            return
        try:
            metrics.log_params(self.client, self.run_id, self.params_to_log)
        except Exception as e:  # noqa: BLE001 - e.g. a param the run already has with another value
            log.warning("MLflow: the training's params were not logged (%s: %s)", type(e).__name__, e)
        self._start_system_metrics()

    def _start_system_metrics(self) -> None:
        try:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            self._system = SystemMetricsMonitor(self.run_id, sampling_interval=SYSTEM_METRICS_INTERVAL_S,
                                                resume_logging=True, tracking_uri=self.settings.tracking_uri)
            self._system.start()
        except Exception as e:  # noqa: BLE001 - e.g. psutil missing
            log.warning("MLflow: no system metrics (%s: %s)", type(e).__name__, e)
            self._system = None

    def on_train_end(self, logs: dict | None = None) -> None:
        if self._system is not None:
            try:
                self._system.finish()
            except Exception as e:  # noqa: BLE001
                log.warning("MLflow: system metrics did not stop cleanly (%s: %s)", type(e).__name__, e)
            self._system = None

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._started = time.monotonic()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.run_id is None:
            return
        values = {**(logs or {}), "epoch_seconds": time.monotonic() - self._started}
        rows = metrics.epoch_metrics(values, epoch + 1, LIVE_METRICS)
        try:
            self.client.log_batch(self.run_id, metrics=rows)
        except Exception as e:  # noqa: BLE001
            log.warning("MLflow: epoch %d not logged live (%s: %s)", epoch + 1, type(e).__name__, e)

    def log_history(self, model_run_dir: Path) -> None:
        """The totals, the history file and the learning curve, once the training is over."""
        if self.run_id is None:
            return
        try:
            history = json.loads((model_run_dir / HISTORY_FILE).read_text())
            metrics.log_history(self.client, self.run_id, history)
            artifacts.log_training(self.client, self.run_id, history,
                                   f"{self.settings.pipeline_name} {self.settings.pipeline_run_id}")
            artifacts.mark_logged(self.client, self.run_id, artifacts.TRAINING_DIR, str(model_run_dir))
        except Exception as e:  # noqa: BLE001
            log.warning("MLflow: the training history was not logged (%s: %s)", type(e).__name__, e)

"""The Trainer's run_fn: models/trainer.run_fn, with each epoch's metrics sent to MLflow as
the epoch ends (when the pipeline has tracking settings), so the UI shows a training live.

The tracking settings travel in custom_config (components/trainer/executor.py adds the
pipeline run id); they are taken out before models/trainer.py reads its own sections.
A tracking server that fails is logged and skipped: it never stops a training.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import keras

from components.trainer.executor import TRACKING_KEY
from models import trainer
from tracking import live

log = logging.getLogger(__name__)

# What goes to MLflow as each epoch ends: the history's per-epoch values (epoch_seconds
# measured here) and the learning rate; the runner's final record does not log them again.
LIVE_METRICS = (*live.EPOCH_METRICS, "learning_rate")


def run_fn(fn_args: Any) -> None:
    """TFX Trainer entry point (`run_fn="components.trainer.run_fn.run_fn"`)."""
    custom_config = dict(fn_args.custom_config or {})
    tracking = custom_config.pop(TRACKING_KEY, None)
    fn_args.custom_config = custom_config
    settings = live.TrackingSettings.from_dict(tracking) if tracking else None
    callbacks = [LiveEpochMetrics(settings)] if settings else []
    trainer.run_fn(fn_args, extra_callbacks=callbacks)
    if settings is not None:  # which runs trained it, for the model card
        trainer.write_training_facts(fn_args.serving_model_dir, {
            "pipeline_run_id": settings.pipeline_run_id, "mlflow_run_id": callbacks[0].run_id,
        })


class LiveEpochMetrics(keras.callbacks.Callback):
    """Logs each finished epoch (step = epoch number from 1, timestamp = its end) into the
    pipeline run's MLflow run, found or created when training starts."""

    def __init__(self, settings: live.TrackingSettings):
        super().__init__()
        self.settings = settings
        self.client = None
        self.run_id: str | None = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        import mlflow

        try:
            self.client = mlflow.MlflowClient(self.settings.tracking_uri)
            self.run_id = live.find_or_create_run(self.client, self.settings)
            log.info("MLflow: logging the epochs live into run %s (%s)", self.run_id, self.settings.tracking_uri)
        except Exception as e:  # noqa: BLE001 - tracking must not stop the training
            log.warning("MLflow: no live epoch metrics (%s: %s)", type(e).__name__, e)
            self.run_id = None

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._started = time.monotonic()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.run_id is None:
            return
        values = {**(logs or {}), "epoch_seconds": time.monotonic() - self._started}
        rows = live.epoch_metrics(values, epoch + 1, LIVE_METRICS)
        try:
            self.client.log_batch(self.run_id, metrics=rows)
        except Exception as e:  # noqa: BLE001
            log.warning("MLflow: epoch %d not logged live (%s: %s)", epoch + 1, type(e).__name__, e)

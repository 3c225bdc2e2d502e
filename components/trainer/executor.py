"""TFX's Trainer executor, telling run_fn which pipeline run it trains for.

The stock GenericExecutor gives run_fn no pipeline run id; the MLflow run of a pipeline run
is found by that id (tracking/live.py), so this executor adds it to the tracking settings
in custom_config. Everything else is TFX's own.
"""

from __future__ import annotations

from typing import Any

from tfx.components.trainer.executor import GenericExecutor

TRACKING_KEY = "tracking"  # custom_config[TRACKING_KEY]: tracking.live.TrackingSettings.to_dict()


class TrackedTrainerExecutor(GenericExecutor):
    """GenericExecutor, plus `pipeline_run_id` in `custom_config["tracking"]` when tracking is on."""

    def _GetFnArgs(self, input_dict: dict[str, list], output_dict: dict[str, list], exec_properties: dict[str, Any]):  # noqa: N802 - TFX's name
        fn_args = super()._GetFnArgs(input_dict, output_dict, exec_properties)
        tracking = (fn_args.custom_config or {}).get(TRACKING_KEY)
        if tracking is not None:
            tracking["pipeline_run_id"] = self._context.pipeline_run_id if self._context else None
        return fn_args

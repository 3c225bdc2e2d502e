"""TFX's Trainer executor, telling run_fn which pipeline run it trains for.

The stock GenericExecutor gives run_fn no pipeline run id; the MLflow run of a pipeline run
is found by that id (tracking/lifecycle.py), so this executor adds it to the tracking
settings in custom_config, and a training that fails ends that run FAILED. Everything
else is TFX's own.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from tfx.components.trainer.executor import GenericExecutor

from components.tracked import pipeline_run_id, records_failures

TRACKING_KEY = "tracking"  # custom_config[TRACKING_KEY]: tracking.lifecycle.TrackingSettings.to_dict()


def _tracking_of(exec_properties: Mapping[str, Any]) -> Any:
    custom_config = exec_properties.get("custom_config") or "{}"
    if isinstance(custom_config, str):
        custom_config = json.loads(custom_config)
    return (custom_config or {}).get(TRACKING_KEY)


class TrackedTrainerExecutor(GenericExecutor):
    """GenericExecutor, plus `pipeline_run_id` in `custom_config["tracking"]` when tracking is on."""

    Do = records_failures(_tracking_of)(GenericExecutor.Do)

    def _GetFnArgs(self, input_dict: dict[str, list], output_dict: dict[str, list], exec_properties: dict[str, Any]):  # noqa: N802 - TFX's name
        fn_args = super()._GetFnArgs(input_dict, output_dict, exec_properties)
        tracking = (fn_args.custom_config or {}).get(TRACKING_KEY)
        if tracking is not None:
            tracking["pipeline_run_id"] = pipeline_run_id(self._context)
        return fn_args

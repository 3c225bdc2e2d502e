"""TFX glue for CaptionPusher: checks the blessing, pushes with push.py, marks the PushedModel.

A model is pushed only when its blessing has `blessed == 1` and names this very model
(`current_model_id`), the properties BleuEvaluator sets like TFX's Evaluator. Otherwise the
PushedModel records `pushed = 0` and the reason, and nothing is written to the serving dir.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from tfx import types
from tfx.components.evaluator import constants as tfx_evaluator
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.utils import path_utils

from components.caption_pusher import push

log = logging.getLogger(__name__)

PUSH_FILE = "push.json"


class Executor(base_executor.BaseExecutor):
    def Do(
        self,
        input_dict: dict[str, list[types.Artifact]],
        output_dict: dict[str, list[types.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        model = artifact_utils.get_single_instance(input_dict["model"])
        blessing = artifact_utils.get_single_instance(input_dict["model_blessing"])
        pushed = artifact_utils.get_single_instance(output_dict["pushed_model"])
        base_dir = Path(exec_properties["base_dir"])

        refusal = _refusal(model, blessing)
        if refusal:
            log.warning("not pushing model %s: %s", model.uri, refusal)
            pushed.set_int_custom_property("pushed", 0)
            pushed.set_string_custom_property("reason", refusal)
            _write_record(pushed, {"pushed": False, "reason": refusal, "model_uri": model.uri})
            return

        result = push.push_model(
            path_utils.serving_model_path(model.uri),
            base_dir,
            source={"model_id": model.id, "model_uri": model.uri, "blessing_uri": blessing.uri},
        )
        reason = (
            f"pushed as version {result.version}"
            if result.copied
            else f"version {result.version} already holds this model (same content): not copied again"
        )
        pushed.set_int_custom_property("pushed", 1)
        pushed.set_int_custom_property("pushed_version", result.version)
        pushed.set_string_custom_property("pushed_destination", str(result.path))
        pushed.set_string_custom_property("reason", reason)
        _write_record(
            pushed,
            {
                "pushed": True,
                "version": result.version,
                "destination": str(result.path),
                "copied": result.copied,
                "fingerprint": result.fingerprint,
                "model_uri": model.uri,
                "reason": reason,
            },
        )
        log.info("CaptionPusher: %s (%s)", reason, result.path)


def _refusal(model: types.Artifact, blessing: types.Artifact) -> str | None:
    """Why this model must not be pushed, or None."""
    c = tfx_evaluator
    if blessing.get_int_custom_property(c.ARTIFACT_PROPERTY_BLESSED_KEY) != c.BLESSED_VALUE:
        return blessing.get_string_custom_property("reason") or "not blessed"
    blessed_id = blessing.get_int_custom_property(c.ARTIFACT_PROPERTY_CURRENT_MODEL_ID_KEY)
    if blessed_id != model.id:
        return f"the blessing is for model id {blessed_id}, not for this model (id {model.id})"
    return None


def _write_record(pushed: types.Artifact, record: dict[str, Any]) -> None:
    os.makedirs(pushed.uri, exist_ok=True)
    with open(os.path.join(pushed.uri, PUSH_FILE), "w") as f:
        json.dump(record, f, indent=2)

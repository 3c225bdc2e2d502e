"""TFX glue for CaptionPusher: TFX's own Pusher executor, with our push into TF Serving's layout.

Built on `tfx.components.pusher.executor.Executor` (as custom pushers such as deep-diver's
Hugging Face pusher are): its `CheckBlessing` decides whether the model may go out,
`GetModelPath` finds the serving export and `_MarkPushed` / `_MarkNotPushed` mark the
PushedModel the way every TFX tool reads it. What is ours is push.py (integer versions,
the atomic rename, no duplicate push) and one more check: the blessing must name this very
model (`current_model_id`, set by BleuEvaluator like TFX's Evaluator). A model that is not
pushed gets `pushed = 0` and the reason; nothing is written to the serving dir.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from tfx import types
from tfx.components.evaluator import constants as tfx_evaluator
from tfx.components.pusher import executor as tfx_pusher
from tfx.types import artifact_utils

from components.caption_pusher import push
from components.caption_pusher.card import model_card
from components.tracked import from_parameter, records_failures
from models.contract import PUSH_FILE, TRAINING_FACTS_FILE

log = logging.getLogger(__name__)


class Executor(tfx_pusher.Executor):
    @records_failures(from_parameter)
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

        refusal = self._refusal(input_dict, model, blessing)
        if refusal:
            log.warning("not pushing model %s: %s", model.uri, refusal)
            self._MarkNotPushed(pushed)
            pushed.set_string_custom_property("reason", refusal)
            _write_record(pushed, {"pushed": False, "reason": refusal, "model_uri": model.uri})
            return

        result = push.push_model(
            self.GetModelPath(input_dict),
            base_dir,
            source={
                "model_id": model.id,
                "model_uri": model.uri,
                "blessing_uri": blessing.uri,
                "card": model_card(
                    {**json.loads(exec_properties.get("card_facts") or "{}"), **_training_facts(self.GetModelPath(input_dict))},
                    _scores(blessing), model.id,
                ),
            },
        )
        reason = (
            f"pushed as version {result.version}"
            if result.copied
            else f"version {result.version} already holds this model (same content): not copied again"
        )
        self._MarkPushed(pushed, pushed_destination=str(result.path))
        # An int, not TFX's string: versions are numbers here (lineage and the registry compare them).
        pushed.set_int_custom_property("pushed_version", result.version)
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

    def _refusal(
        self, input_dict: dict[str, list[types.Artifact]], model: types.Artifact, blessing: types.Artifact
    ) -> str | None:
        """Why this model must not be pushed, or None."""
        if not self.CheckBlessing(input_dict):
            return blessing.get_string_custom_property("reason") or "not blessed"
        blessed_id = blessing.get_int_custom_property(tfx_evaluator.ARTIFACT_PROPERTY_CURRENT_MODEL_ID_KEY)
        if blessed_id != model.id:
            return f"the blessing is for model id {blessed_id}, not for this model (id {model.id})"
        return None


def _scores(blessing: types.Artifact) -> dict[str, float | None]:
    """The eval scores BleuEvaluator put on the blessing (None where it had none)."""
    names = ("bleu_1", "bleu_4", "cider", "meteor", "coco_bleu_4", "coco_cider_d")
    return {n: blessing.get_float_custom_property(n) if blessing.has_custom_property(n) else None for n in names}


def _write_record(pushed: types.Artifact, record: dict[str, Any]) -> None:
    os.makedirs(pushed.uri, exist_ok=True)
    with open(os.path.join(pushed.uri, PUSH_FILE), "w") as f:
        json.dump(record, f, indent=2)


def _training_facts(model_dir: str) -> dict[str, Any]:
    """What the Trainer wrote about the model (vocabulary size, epochs, run ids); {} for a model without it."""
    path = Path(model_dir) / TRAINING_FACTS_FILE
    return json.loads(path.read_text()) if path.exists() else {}

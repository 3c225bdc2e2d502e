"""The CaptionPusher component spec: a Model and its blessing in, a PushedModel out.

Used by pipelines/pipeline.py after BleuEvaluator. Unlike TFX's stock Pusher, which names
versions by timestamp, it numbers them 1, 2, 3... and never publishes a half-copied
version or a duplicate of the latest one (see push.py). The PushedModel artifact records
`pushed` (0/1), `pushed_version`, `pushed_destination` and `reason`.
"""

from __future__ import annotations

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from components.caption_pusher import executor


class CaptionPusherSpec(ComponentSpec):
    PARAMETERS = {
        # TF Serving's model base path: versions go to <base_dir>/<version>/.
        "base_dir": ExecutionParameter(type=str),
        # JSON: the config's facts for the model card (profile, dataset, backbone, decoder, ...).
        "card_facts": ExecutionParameter(type=str),
        # components/tracked.py's settings ("" = none): a failed push ends the MLflow run FAILED.
        "tracking": ExecutionParameter(type=str),
    }
    INPUTS = {
        "model": ChannelParameter(type=standard_artifacts.Model),
        "model_blessing": ChannelParameter(type=standard_artifacts.ModelBlessing),
    }
    OUTPUTS = {
        "pushed_model": ChannelParameter(type=standard_artifacts.PushedModel),
    }


class CaptionPusher(base_component.BaseComponent):
    """Pushes the model's serving export when its blessing says so; records what it did."""

    SPEC_CLASS = CaptionPusherSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(
        self, model: types.BaseChannel, model_blessing: types.BaseChannel, base_dir: str, card_facts: str,
        tracking: str = "",
    ):
        super().__init__(
            spec=CaptionPusherSpec(
                model=model,
                model_blessing=model_blessing,
                base_dir=str(base_dir),
                card_facts=str(card_facts),
                tracking=tracking,
                pushed_model=types.Channel(type=standard_artifacts.PushedModel),
            )
        )

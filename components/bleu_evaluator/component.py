"""The BleuEvaluator component spec: raw Examples and a Model in, an evaluation and a blessing out.

Used by pipelines/pipeline.py after the Trainer. Inputs: `examples` (the raw Examples of
Flickr8kExampleGen: image bytes and reference captions), `model` (the Trainer's Model,
scored through its exported serving signature) and optionally `baseline_model`, the latest
blessed model from a `LatestBlessedModelStrategy` resolver. Outputs: `evaluation`
(metrics.json, predictions.jsonl) and `blessing`, a standard ModelBlessing marked the way
TFX's Evaluator marks it, so the resolver finds it on the next run and pushers read it.
The work is in evaluate.py and gate.py, wired up by executor.py.
"""

from __future__ import annotations

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from components.bleu_evaluator import executor


class CaptionEvaluation(types.Artifact):
    """metrics.json (BLEU-1..4, METEOR or null, speed, gate decision), predictions.jsonl and
    example.jpg (one evaluated image, small: the logged model's input example)."""

    TYPE_NAME = "captioner.CaptionEvaluation"


class BleuEvaluatorSpec(ComponentSpec):
    PARAMETERS = {
        # The split of `examples` to caption and score, e.g. "dev".
        "eval_split": ExecutionParameter(type=str),
        # The serving signature that generates captions ("serving_default", "greedy", ...).
        "signature": ExecutionParameter(type=str),
        "batch_size": ExecutionParameter(type=int),
        "min_bleu_4": ExecutionParameter(type=float),
        "min_bleu_1": ExecutionParameter(type=float),
        "max_bleu_4_drop": ExecutionParameter(type=float),
        # CIDEr-D minimum (0 = no CIDEr-D check); 1 = also score with coco-caption (Java).
        "min_cider": ExecutionParameter(type=float),
        "coco_caption": ExecutionParameter(type=int),
        # MLflow: components/tracked.py's settings ("" = none) and the gallery's image count.
        "tracking": ExecutionParameter(type=str),
        "gallery_size": ExecutionParameter(type=int),
    }
    INPUTS = {
        "examples": ChannelParameter(type=standard_artifacts.Examples),
        "model": ChannelParameter(type=standard_artifacts.Model),
        "baseline_model": ChannelParameter(type=standard_artifacts.Model, optional=True),
    }
    OUTPUTS = {
        "evaluation": ChannelParameter(type=CaptionEvaluation),
        "blessing": ChannelParameter(type=standard_artifacts.ModelBlessing),
    }


class BleuEvaluator(base_component.BaseComponent):
    """Captions the eval split through the model's serving signature, scores it, gates it."""

    SPEC_CLASS = BleuEvaluatorSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(
        self,
        examples: types.BaseChannel,
        model: types.BaseChannel,
        eval_split: str,
        min_bleu_4: float,
        min_bleu_1: float,
        max_bleu_4_drop: float,
        min_cider: float,
        coco_caption: bool,
        signature: str,
        batch_size: int,
        baseline_model: types.BaseChannel | None = None,
        tracking: str = "",
        gallery_size: int = 0,
    ):
        super().__init__(
            spec=BleuEvaluatorSpec(
                examples=examples,
                model=model,
                baseline_model=baseline_model,
                eval_split=eval_split,
                signature=signature,
                batch_size=int(batch_size),
                min_bleu_4=float(min_bleu_4),
                min_bleu_1=float(min_bleu_1),
                max_bleu_4_drop=float(max_bleu_4_drop),
                min_cider=float(min_cider),
                coco_caption=int(bool(coco_caption)),
                tracking=tracking,
                gallery_size=int(gallery_size),
                evaluation=types.Channel(type=CaptionEvaluation),
                blessing=types.Channel(type=standard_artifacts.ModelBlessing),
            )
        )

"""The RunRecorder component: the last step, which completes the pipeline run's MLflow run.

Used by pipelines/pipeline.py after CaptionPusher. The Trainer and BleuEvaluator log what
they measure while they run; this step adds what belongs to the whole run (the config as
params, the dataset as input, the data steps' reports, the model, its registry version
and alias) and ends the run FINISHED. Its inputs are the other steps' outputs, so it works
under any orchestrator, and TFX's cache skips it when nothing upstream changed: a cached
rerun adds nothing. The work is in executor.py, on tracking/.
"""

from __future__ import annotations

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from components.bleu_evaluator.component import CaptionEvaluation
from components.flickr8k_example_gen.component import IngestionReport
from components.run_recorder import executor


class MlflowRun(types.Artifact):
    """mlflow_run.json: where the pipeline run's MLflow run is (tracking URI and run id; the
    id is also the custom property `mlflow_run_id`), so ML Metadata links to it."""

    TYPE_NAME = "captioner.MlflowRun"


class RunRecorderSpec(ComponentSpec):
    PARAMETERS = {
        "tracking": ExecutionParameter(type=str),  # components/tracked.py's settings ("" = none)
        "params": ExecutionParameter(type=str),  # JSON: the whole config, flattened
        "config": ExecutionParameter(type=str),  # JSON: the whole config as the profile has it
        # JSON: {"name", "source", "fingerprint"} of the data snapshot.
        "dataset": ExecutionParameter(type=str),
        "registered_model": ExecutionParameter(type=str),
        "gallery_size": ExecutionParameter(type=int),
    }
    INPUTS = {
        "ingestion_report": ChannelParameter(type=IngestionReport),
        "statistics": ChannelParameter(type=standard_artifacts.ExampleStatistics),
        "schema": ChannelParameter(type=standard_artifacts.Schema),
        "anomalies": ChannelParameter(type=standard_artifacts.ExampleAnomalies),
        "transform_graph": ChannelParameter(type=standard_artifacts.TransformGraph),
        "model": ChannelParameter(type=standard_artifacts.Model),
        "model_run": ChannelParameter(type=standard_artifacts.ModelRun),
        "evaluation": ChannelParameter(type=CaptionEvaluation),
        "blessing": ChannelParameter(type=standard_artifacts.ModelBlessing),
        "pushed_model": ChannelParameter(type=standard_artifacts.PushedModel),
    }
    OUTPUTS = {
        "mlflow_run": ChannelParameter(type=MlflowRun),
    }


class RunRecorder(base_component.BaseComponent):
    """Completes and ends the pipeline run's MLflow run from every step's outputs."""

    SPEC_CLASS = RunRecorderSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, *, tracking: str, params: str, config: str, dataset: str, registered_model: str, gallery_size: int,
                 **inputs: types.BaseChannel):
        super().__init__(spec=RunRecorderSpec(
            tracking=tracking, params=params, config=config, dataset=dataset, registered_model=registered_model,
            gallery_size=int(gallery_size), mlflow_run=types.Channel(type=MlflowRun), **inputs,
        ))

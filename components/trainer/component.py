"""TFX's Trainer component with the tracked executor (components/trainer/executor.py).

TFX deprecates `custom_executor_spec` in favour of customising the component itself: this
is the stock Trainer with its EXECUTOR_SPEC replaced, nothing else. Its node id stays
"Trainer" (pipelines/pipeline.py sets it), as lineage and the tests name it.
"""

from __future__ import annotations

from tfx import v1 as tfx
from tfx.dsl.components.base import executor_spec

from components.trainer.executor import TrackedTrainerExecutor


class TrackedTrainer(tfx.components.Trainer):
    """tfx.components.Trainer whose executor also passes the pipeline run id to run_fn."""

    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(TrackedTrainerExecutor)

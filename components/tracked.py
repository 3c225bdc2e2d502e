"""What the logging steps share: their MLflow settings, the pipeline run they log into, and
a failure recorded as a FAILED run.

The settings are a component parameter (`tracking`, the JSON of
tracking.lifecycle.TrackingSettings; "" = no tracking), so they reach the step under any
orchestrator. The TFX pipeline run id comes from the executor's context where LocalDagRunner
sets it. TFX's Kubeflow V2 launcher does not: on open-source Kubeflow Pipelines the compiled
package puts the run id (the pod's `pipeline/runid` label) in the environment as KFP_RUN_ID
(pipelines/kubeflow_runner.py); on Vertex AI each task runs under
`gs://<pipeline root>/<project>/<job id>/<task>/` (tfx/orchestration/kubeflow/v2/container/
kubeflow_v2_run_executor.py), so there the job id is the run id. Where neither holds, the
steps find no run id and log nothing (with a warning) rather than mix every job into one run.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from pathlib import PurePosixPath
from typing import Any, Callable, Mapping

from tracking.lifecycle import TrackingSettings, fail_run, find_or_create_run

log = logging.getLogger(__name__)

TRACKING_PARAMETER = "tracking"
RUN_ID_ENV = "KFP_RUN_ID"  # set by the open-source Kubeflow package from the pod's label


def encode(settings: TrackingSettings | None) -> str:
    """The component parameter's value ("" = no tracking)."""
    return "" if settings is None else json.dumps(settings.to_dict(), sort_keys=True)


def pipeline_run_id(context: Any) -> str | None:
    """The TFX pipeline run id of the executing step (see the module docstring)."""
    if context is None:
        return None
    if getattr(context, "pipeline_run_id", None):
        return context.pipeline_run_id
    if os.environ.get(RUN_ID_ENV):
        return os.environ[RUN_ID_ENV]
    try:  # Vertex: gs://.../<job id>/<task>/.temp/<task id>/
        tmp_path = context.get_tmp_path().rstrip("/")
    except (RuntimeError, ValueError):
        return None
    if "://" not in tmp_path:  # a local task directory (open-source KFP): no job id in it
        return None
    parts = PurePosixPath(tmp_path).parts
    return parts[-4] if len(parts) >= 5 and parts[-2] == ".temp" else None


def settings_of(raw: str | Mapping[str, Any] | None, context: Any) -> TrackingSettings | None:
    """The step's settings with the run id filled in; None without tracking or without a run id."""
    if not raw:
        return None
    settings = TrackingSettings.from_dict(json.loads(raw) if isinstance(raw, str) else raw)
    run_id = pipeline_run_id(context)
    if run_id is None:
        log.warning("MLflow: the pipeline run id is unknown here, so this step logs nothing")
        return None
    return settings.with_run_id(run_id)


def step_name(context: Any, default: str) -> str:
    node = getattr(context, "pipeline_node", None)
    return node.node_info.id if node is not None and node.node_info.id else default


def open_run(settings: TrackingSettings):
    """(client, run id) of the pipeline run's MLflow run, created if this step is the first."""
    import mlflow

    client = mlflow.MlflowClient(settings.tracking_uri)
    return client, find_or_create_run(client, settings)


def records_failures(raw_settings: Callable[[Mapping[str, Any]], Any]):
    """Decorate an executor's `Do`: when it raises, the pipeline run's MLflow run ends FAILED
    with the error (KILLED on Ctrl-C or SIGTERM; then the error goes on). `raw_settings(exec_properties)` finds the
    settings among the step's parameters."""

    def decorate(do):
        @functools.wraps(do)
        def wrapper(self, input_dict, output_dict, exec_properties):
            try:
                return do(self, input_dict, output_dict, exec_properties)
            except BaseException as error:  # Ctrl-C and SIGTERM too: the run must not stay RUNNING
                context = getattr(self, "_context", None)
                settings = settings_of(raw_settings(exec_properties), context)
                if settings is not None:
                    try:
                        import mlflow

                        step = step_name(context, type(self).__module__)
                        status = "FAILED" if isinstance(error, Exception) else "KILLED"
                        run_id = fail_run(mlflow.MlflowClient(settings.tracking_uri), settings, step, error, status)
                        log.info("MLflow: run %s ended %s (%s stopped)", run_id, status, step)
                    except Exception as e:  # noqa: BLE001 - the step's own error is the one to see
                        log.warning("MLflow: could not record the failure (%s: %s)", type(e).__name__, e)
                raise

        return wrapper

    return decorate


def from_parameter(exec_properties: Mapping[str, Any]) -> Any:
    return exec_properties.get(TRACKING_PARAMETER)

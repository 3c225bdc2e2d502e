"""MlflowRunEnd: the exit handler that ends a failed pipeline run's MLflow run FAILED,
whichever step failed.

TFX compiles exit handlers for KFP's pipeline spec (tfx.orchestration.experimental.exit_handler),
so both specs of pipelines/kubeflow_runner.py (Vertex AI and open-source Kubeflow Pipelines)
run it after the whole DAG, successful or not, with the DAG's final status (`FinalStatusStr`:
the JSON of KFP's PipelineTaskFinalStatus). The run id is the one the steps use
(components/tracked.py): on open-source KFP the run UUID the package puts in `KFP_RUN_ID`
(the final status names the Argo workflow there, not the run), on Vertex AI the job id. A run that succeeded was already ended by RunRecorder; a failed
one is ended FAILED with the orchestrator's error, unless a step that logs already ended
it with its own. LocalDagRunner has no exit handlers, so pipelines/local_runner.py calls
`end_run` itself when the DAG fails, with the same final-status JSON. The work is in `end_run`.

No `from __future__ import annotations` here: TFX reads the real annotation objects.
"""

import json
import os
from typing import Optional

from tfx import v1 as tfx

from components.tracked import RUN_ID_ENV
from tracking.lifecycle import TrackingSettings, end_failed_run

# PipelineTaskFinalStatus states that mean the job did not succeed (CANCELLED -> KILLED).
FAILED_STATES = ("FAILED", "CANCELLED", "CANCELED")


def job_id(final_status: dict) -> Optional[str]:
    """The Vertex AI pipeline job's id: the last part of its resource name (the directory
    each task runs under, which the steps take as their pipeline run id there)."""
    name = final_status.get("pipelineJobResourceName") or final_status.get("pipelineJobName") or ""
    return name.rstrip("/").rsplit("/", 1)[-1] or None


def end_run(final_status_json: str, tracking: str) -> Optional[str]:
    """End the MLflow run of a failed pipeline job FAILED; None when there is nothing to do
    (the job succeeded, or no tracking settings). Returns the run id."""
    final_status = json.loads(final_status_json or "{}")
    state = str(final_status.get("state", "")).upper()
    if state not in FAILED_STATES or not tracking:  # succeeded, or a state this does not know
        return None
    run_id = os.environ.get(RUN_ID_ENV) or job_id(final_status)  # open-source KFP, else Vertex
    if run_id is None:
        return None
    settings = TrackingSettings.from_dict(json.loads(tracking))
    import mlflow

    message = (final_status.get("error") or {}).get("message") or f"the pipeline ended {final_status.get('state', 'unknown')}"
    client = mlflow.MlflowClient(settings.tracking_uri)
    status = "KILLED" if state.startswith("CANCEL") else "FAILED"
    return end_failed_run(client, settings.with_run_id(run_id), message, status)


@tfx.orchestration.experimental.exit_handler
def MlflowRunEnd(final_status: tfx.dsl.components.Parameter[str], tracking: tfx.dsl.components.Parameter[str]):
    """Ends the pipeline run's MLflow run FAILED when the pipeline failed."""
    end_run(final_status, tracking)

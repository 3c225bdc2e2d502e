"""The MLflow run of a TFX pipeline run: found or created by whichever step logs first,
ended FINISHED by the last step or FAILED by the step that failed.

One TFX pipeline run is one MLflow run, found by its tag `pipeline_run_id`. The settings
travel as a plain dict (`TrackingSettings.to_dict`) in a component's parameters, so the
same code logs under LocalDagRunner, Kubeflow or Vertex. Who started it and from which
commit (`mlflow.user`, `mlflow.source.*`) is read where the run is created, not carried in
the parameters, so a new commit does not invalidate TFX's cache. Public MLflow client API
only; no TFX, no TensorFlow.
"""

from __future__ import annotations

import dataclasses
import getpass
import os
import subprocess
import time
from pathlib import Path
from typing import Any, Mapping

RUN_TAG = "pipeline_run_id"  # the TFX pipeline run id; one MLflow run per value
PIPELINE_TAG = "pipeline_name"
STATUS_TAG = "pipeline_status"
ERROR_TAG = "error"
MAX_TAG_CHARS = 5000
# Where the code of a container image came from, when it is not a git checkout (Dockerfile).
GIT_COMMIT_ENV = "CAPTIONER_GIT_COMMIT"
REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclasses.dataclass(frozen=True)
class TrackingSettings:
    """Where a pipeline's runs are recorded; `pipeline_run_id` is filled in at run time."""

    tracking_uri: str
    experiment: str
    pipeline_name: str
    artifact_location: str | None = None  # for a new experiment (sqlite stores); servers decide
    pipeline_run_id: str | None = None
    profile: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> TrackingSettings:
        return cls(**dict(raw))

    def with_run_id(self, pipeline_run_id: str | None) -> TrackingSettings:
        return dataclasses.replace(self, pipeline_run_id=pipeline_run_id)


def experiment_id(client, name: str, artifact_location: str | None = None) -> str:
    """The experiment called `name`, created (with `artifact_location`) when missing."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location)
    except Exception:  # created meanwhile by another process
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def find_run(client, experiment: str, pipeline_run_id: str) -> str | None:
    """The MLflow run id recording this TFX pipeline run, or None; the oldest if several."""
    runs = client.search_runs(
        [experiment], filter_string=f"tags.{RUN_TAG} = {quoted(pipeline_run_id)}",
        order_by=["attributes.start_time ASC"], max_results=1,
    )
    return runs[0].info.run_id if runs else None


def find_run_of(client, settings: TrackingSettings) -> str | None:
    """The run of `settings.pipeline_run_id` if one exists (nothing is created)."""
    experiment = client.get_experiment_by_name(settings.experiment)
    if experiment is None or not settings.pipeline_run_id:
        return None
    return find_run(client, experiment.experiment_id, settings.pipeline_run_id)


def find_or_create_run(client, settings: TrackingSettings) -> str:
    """The run of `settings.pipeline_run_id`: the one already there, or a new RUNNING one
    named after the profile and the time, tagged with who started it from which source."""
    if not settings.pipeline_run_id:
        raise ValueError("the TFX pipeline run id is not known, so there is no run to find")
    experiment = experiment_id(client, settings.experiment, settings.artifact_location)
    found = find_run(client, experiment, settings.pipeline_run_id)
    if found is not None:
        return found
    tags = {RUN_TAG: settings.pipeline_run_id, PIPELINE_TAG: settings.pipeline_name, **source_tags()}
    if settings.profile:
        tags["profile"] = settings.profile
    return client.create_run(experiment, tags=tags, run_name=run_name(settings)).info.run_id


def run_name(settings: TrackingSettings, when: float | None = None) -> str:
    """`<profile> <local date and time>`, e.g. `flickr8k_lite0 2026-12-04 21:05`."""
    stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime(time.time() if when is None else when))
    return f"{settings.profile or settings.pipeline_name} {stamp}"


def source_tags() -> dict[str, str]:
    """MLflow's own source tags: the user, the code (the checkout or the image) and its commit."""
    tags = {"mlflow.user": _user(), "mlflow.source.name": str(REPO_ROOT), "mlflow.source.type": "JOB"}
    commit = os.environ.get(GIT_COMMIT_ENV) or git_commit(REPO_ROOT)
    if commit:
        tags["mlflow.source.git.commit"] = commit
    return tags


def git_commit(path: Path) -> str | None:
    """The commit checked out at `path`, or None outside a git checkout (or without git)."""
    try:
        result = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"],
                                capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = result.stdout.strip()
    return commit if result.returncode == 0 and len(commit) == 40 else None


def finish_run(client, run_id: str) -> None:
    """The pipeline ran to its end: FINISHED."""
    client.set_tag(run_id, STATUS_TAG, "FINISHED")
    client.set_terminated(run_id, "FINISHED")


def fail_run(client, settings: TrackingSettings, step: str, error: BaseException, status: str = "FAILED") -> str:
    """Record that `step` failed with `error`: the run (created if no step had logged yet)
    ends `status` (FAILED, or KILLED when it was stopped) with the error in its tags.
    Returns the run id."""
    run_id = find_or_create_run(client, settings)
    client.set_tag(run_id, ERROR_TAG, clip(f"{step}: {type(error).__name__}: {error}", MAX_TAG_CHARS))
    client.set_tag(run_id, "failed_step", step)
    client.set_tag(run_id, STATUS_TAG, status)
    client.set_terminated(run_id, status)
    return run_id


def end_failed_run(client, settings: TrackingSettings, message: str, status: str = "FAILED") -> str:
    """A pipeline run that failed (as its orchestrator says): its run ends `status` (FAILED
    or KILLED) with `message`, unless a step already ended it so with its own error.
    Returns the run id."""
    found = find_run_of(client, settings)
    if found is not None and client.get_run(found).info.status in ("FAILED", "KILLED"):
        return found
    return fail_run(client, settings, "pipeline", RuntimeError(message), status)


def gate_tags(blessed: bool, reason: str) -> dict[str, str]:
    """The gate's decision as the run's tags `gate_decision` and `gate_reason`."""
    return {"gate_decision": "blessed" if blessed else "not blessed", "gate_reason": clip(reason, MAX_TAG_CHARS)}


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 15] + "… (truncated)"


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container user without a passwd entry
        return str(os.getuid())


def quoted(value: str) -> str:
    """A string literal for MLflow's search filter: single quotes, or double quotes around a
    value with a single quote in it (the filter language has no escapes)."""
    if "'" not in value:
        return f"'{value}'"
    if '"' in value:
        raise ValueError(f"a pipeline run id with both kinds of quote cannot be searched for: {value!r}")
    return f'"{value}"'


def sqlite_artifact_root(config) -> Path | None:
    """Where artifacts go beside a sqlite store: `<db dir>/mlartifacts`, which for the
    default store is `<output root>/mlartifacts`. None for a tracking server."""
    uri = config.mlflow_tracking_uri
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///"):]).parent / "mlartifacts"


def settings_of(config) -> TrackingSettings:
    """The tracking settings of a `configs.Config`: its store (a server, or the sqlite file
    under the output root with artifacts beside it), experiment, pipeline name and profile."""
    root = sqlite_artifact_root(config)
    location = None if root is None else (root / config.mlflow.experiment).as_uri()
    return TrackingSettings(config.mlflow_tracking_uri, config.mlflow.experiment, config.pipeline.name,
                            location, profile=config.profile)

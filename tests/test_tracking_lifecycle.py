"""tracking/lifecycle.py and components/tracked.py against a real MLflow store (sqlite in a
temporary directory): one MLflow run per TFX pipeline run, whoever asks first, named and
tagged as MLflow's UI expects; a failing step ends it FAILED; epoch rows as the Trainer
sends them."""

from __future__ import annotations

import math
import re

import mlflow
import pytest

from tracking import lifecycle
from tracking import metrics


@pytest.fixture
def client(tmp_path):
    return mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")


def settings(tmp_path, run_id: str | None) -> lifecycle.TrackingSettings:
    return lifecycle.TrackingSettings(f"sqlite:///{tmp_path / 'mlflow.db'}", "captioner", "captioner-smoke",
                                 (tmp_path / "mlartifacts").as_uri(), run_id, profile="smoke")


def test_one_mlflow_run_per_pipeline_run_whoever_asks_first(client, tmp_path):
    first = lifecycle.find_or_create_run(client, settings(tmp_path, "2026-12-04T10:00:00.1"))
    again = lifecycle.find_or_create_run(client, settings(tmp_path, "2026-12-04T10:00:00.1"))
    other = lifecycle.find_or_create_run(client, settings(tmp_path, "2026-12-04T11:00:00.2"))
    assert first == again != other
    run = client.get_run(first)
    assert run.info.status == "RUNNING"
    assert run.data.tags[lifecycle.RUN_TAG] == "2026-12-04T10:00:00.1"
    assert run.data.tags[lifecycle.PIPELINE_TAG] == "captioner-smoke"
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == "captioner" and experiment.artifact_location == (tmp_path / "mlartifacts").as_uri()
    assert lifecycle.find_run(client, run.info.experiment_id, "2026-12-04T12:00:00.3") is None


def test_a_run_id_with_a_quote_is_matched_exactly(client, tmp_path):
    odd = lifecycle.find_or_create_run(client, settings(tmp_path, "run 'one'"))
    plain = lifecycle.find_or_create_run(client, settings(tmp_path, "run one"))
    assert odd != plain and lifecycle.find_or_create_run(client, settings(tmp_path, "run 'one'")) == odd


def test_without_a_pipeline_run_id_there_is_no_run_to_find(client, tmp_path):
    with pytest.raises(ValueError, match="pipeline run id is not known"):
        lifecycle.find_or_create_run(client, settings(tmp_path, None))


def test_epoch_rows_keep_the_finite_values_asked_for_at_their_epoch(client, tmp_path):
    logs = {"loss": 1.5, "val_loss": math.nan, "accuracy": None, "other": 3.0, "val_accuracy": 0.25}
    rows = metrics.epoch_metrics(logs, 3, ("loss", "val_loss", "accuracy", "val_accuracy"), timestamp_ms=1234)
    assert [(r.key, r.value, r.step, r.timestamp) for r in rows] == [("loss", 1.5, 3, 1234), ("val_accuracy", 0.25, 3, 1234)]
    run_id = lifecycle.find_or_create_run(client, settings(tmp_path, "r"))
    assert not metrics.has_metric(client, run_id, "loss")
    client.log_batch(run_id, metrics=rows)
    assert metrics.has_metric(client, run_id, "loss") and not metrics.has_metric(client, run_id, "val_loss")


def test_settings_travel_as_a_plain_dict(tmp_path):
    original = settings(tmp_path, "r")
    assert lifecycle.TrackingSettings.from_dict(original.to_dict()) == original


def test_a_new_run_is_named_by_profile_and_time_and_says_who_ran_which_commit(client, tmp_path):
    import getpass
    import subprocess

    run = client.get_run(lifecycle.find_or_create_run(client, settings(tmp_path, "2026-12-04T10:00:00.1")))
    assert re.fullmatch(r"smoke \d{4}-\d\d-\d\d \d\d:\d\d", run.info.run_name)
    tags = run.data.tags
    assert tags["mlflow.user"] == getpass.getuser() and tags["profile"] == "smoke"
    assert tags["mlflow.source.name"] == str(lifecycle.REPO_ROOT) and tags["mlflow.source.type"] == "JOB"
    head = subprocess.run(["git", "-C", str(lifecycle.REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:  # a checkout; an exported tree has no commit to name
        assert tags["mlflow.source.git.commit"] == head.stdout.strip()


def test_an_image_without_git_names_its_commit_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(lifecycle.GIT_COMMIT_ENV, "0123abc")
    assert lifecycle.source_tags()["mlflow.source.git.commit"] == "0123abc"
    assert lifecycle.git_commit(tmp_path) is None  # not a checkout


def test_a_failure_ends_the_run_failed_with_the_step_and_error_whoever_opened_it(client, tmp_path):
    opened = lifecycle.find_or_create_run(client, settings(tmp_path, "r1"))
    assert lifecycle.fail_run(client, settings(tmp_path, "r1"), "BleuEvaluator", KeyError("beam_search")) == opened
    run = client.get_run(opened)
    assert run.info.status == "FAILED" and run.data.tags["failed_step"] == "BleuEvaluator"
    assert run.data.tags["error"] == "BleuEvaluator: KeyError: 'beam_search'"
    # A step that fails before any step logged: the run is created, then FAILED.
    fresh = lifecycle.fail_run(client, settings(tmp_path, "r2"), "Trainer", RuntimeError("out of memory"))
    assert fresh != opened and client.get_run(fresh).info.status == "FAILED"


def test_finish_marks_the_run_finished(client, tmp_path):
    run_id = lifecycle.find_or_create_run(client, settings(tmp_path, "r"))
    lifecycle.finish_run(client, run_id)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags[lifecycle.STATUS_TAG] == "FINISHED"
    assert run.info.end_time >= run.info.start_time


# --- components/tracked.py: the steps' side ----------------------------------------------

def _context(**kwargs):
    from tfx.dsl.components.base.base_executor import BaseExecutor

    return BaseExecutor.Context(**kwargs)


def test_the_run_id_comes_from_the_local_runner_the_kfp_pod_label_or_the_vertex_task_path(monkeypatch):
    from components import tracked

    monkeypatch.delenv(tracked.RUN_ID_ENV, raising=False)
    assert tracked.pipeline_run_id(_context(pipeline_run_id="2026-12-04T10:00:00.1")) == "2026-12-04T10:00:00.1"
    # Kubeflow V2 / Vertex: <root>/<project>/<job id>/<task>_<uuid>/.temp/<task id>/
    kfp = _context(tmp_dir="gs://bucket/root/123/captioner-20261204/trainer_abc/.temp", unique_id="trainer_abc")
    assert tracked.pipeline_run_id(kfp) == "captioner-20261204"
    assert tracked.pipeline_run_id(_context()) is None and tracked.pipeline_run_id(None) is None
    # Open-source Kubeflow Pipelines: every task under the same local /tmp/kfp_outputs, no job
    # id in the path; the compiled package puts the pod's run id label in the environment.
    local = _context(tmp_dir="/tmp/kfp_outputs/.temp", unique_id="kfp_outputs")
    assert tracked.pipeline_run_id(local) is None
    monkeypatch.setenv(tracked.RUN_ID_ENV, "5f0c-run-uuid")
    assert tracked.pipeline_run_id(local) == "5f0c-run-uuid"
    assert tracked.pipeline_run_id(_context(pipeline_run_id="local-run")) == "local-run"  # the runner's own id first


def test_a_step_that_raises_ends_the_run_failed_and_still_raises(client, tmp_path):
    from tfx.dsl.components.base.base_executor import BaseExecutor

    from components import tracked

    class Failing(BaseExecutor):
        @tracked.records_failures(tracked.from_parameter)
        def Do(self, input_dict, output_dict, exec_properties):  # noqa: N802 - TFX's name
            raise ValueError("no signature 'beam_search'")

    properties = {"tracking": tracked.encode(settings(tmp_path, None))}
    with pytest.raises(ValueError, match="beam_search"):
        Failing(_context(pipeline_run_id="run-7")).Do({}, {}, properties)
    run = client.get_run(lifecycle.find_run(client, client.get_experiment_by_name("captioner").experiment_id, "run-7"))
    assert run.info.status == "FAILED" and "ValueError: no signature 'beam_search'" in run.data.tags["error"]
    # Without tracking settings the error is the same and nothing is recorded.
    with pytest.raises(ValueError):
        Failing(_context(pipeline_run_id="run-8")).Do({}, {}, {"tracking": ""})
    assert lifecycle.find_run(client, run.info.experiment_id, "run-8") is None


def test_the_kubeflow_exit_handler_ends_a_failed_job_failed_and_keeps_a_steps_own_error(client, tmp_path):
    import json

    from components import tracked
    from components.run_end.component import end_run, job_id

    tracking = tracked.encode(settings(tmp_path, None))
    resource = "projects/123/locations/europe-west4/pipelineJobs/captioner-smoke-20261204"
    assert job_id({"pipelineJobResourceName": resource}) == "captioner-smoke-20261204"
    ok = json.dumps({"state": "SUCCEEDED", "pipelineJobResourceName": resource})
    assert end_run(ok, tracking) is None and client.get_experiment_by_name("captioner") is None
    failed = json.dumps({"state": "FAILED", "pipelineJobResourceName": resource,
                         "error": {"code": 9, "message": "The DAG failed because some tasks failed: [statisticsgen]"}})
    run = client.get_run(end_run(failed, tracking))
    assert run.info.status == "FAILED" and run.data.tags["failed_step"] == "pipeline"
    assert run.data.tags["error"] == "pipeline: RuntimeError: The DAG failed because some tasks failed: [statisticsgen]"
    # A step that logs failed first, with its own error: that one stays.
    other = "projects/123/locations/europe-west4/pipelineJobs/captioner-smoke-20261205"
    lifecycle.fail_run(client, settings(tmp_path, "captioner-smoke-20261205"), "Trainer", MemoryError("out of memory"))
    kept = client.get_run(end_run(failed.replace(resource, other), tracking))
    assert kept.data.tags["failed_step"] == "Trainer" and "MemoryError" in kept.data.tags["error"]
    assert end_run(failed, "") is None  # no tracking: nothing to end


def test_a_stopped_step_ends_the_run_killed(client, tmp_path):
    from tfx.dsl.components.base.base_executor import BaseExecutor

    from components import tracked

    class Stopped(BaseExecutor):
        @tracked.records_failures(tracked.from_parameter)
        def Do(self, input_dict, output_dict, exec_properties):  # noqa: N802 - TFX's name
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Stopped(_context(pipeline_run_id="run-9")).Do({}, {}, {"tracking": tracked.encode(settings(tmp_path, None))})
    run = client.get_run(lifecycle.find_run(client, client.get_experiment_by_name("captioner").experiment_id, "run-9"))
    assert run.info.status == "KILLED" and run.data.tags["pipeline_status"] == "KILLED"


def test_the_exit_handler_leaves_unknown_states_alone_and_ends_a_cancelled_job_killed(client, tmp_path):
    import json

    from components import tracked
    from components.run_end.component import end_run

    tracking = tracked.encode(settings(tmp_path, None))
    job = "projects/1/locations/l/pipelineJobs/job-1"
    assert end_run(json.dumps({"state": "COMPLETE", "pipelineJobResourceName": job}), tracking) is None
    run = client.get_run(end_run(json.dumps({"state": "CANCELLED", "pipelineJobResourceName": job}), tracking))
    assert run.info.status == "KILLED"


def test_on_kubeflow_the_exit_handler_ends_the_run_the_steps_logged_to_not_the_workflows(client, tmp_path, monkeypatch):
    """Open-source KFP names the Argo workflow in the final status; the steps log under the
    run UUID the package puts in KFP_RUN_ID, so that is the run to end."""
    import json

    from components import tracked
    from components.run_end.component import end_run

    run_uuid = "1f0c2b7e-8a54-4d3e-9a1b-5b8e2f6c7d90"
    opened = lifecycle.find_or_create_run(client, settings(tmp_path, run_uuid))
    monkeypatch.setenv(tracked.RUN_ID_ENV, run_uuid)
    failed = json.dumps({"state": "FAILED", "pipelineJobResourceName": "captioner-smoke-x7k2p",
                         "error": {"message": "trainer failed"}})
    ended = end_run(failed, tracked.encode(settings(tmp_path, None)))
    assert ended == opened
    assert client.get_run(ended).info.status == "FAILED"
    experiment = client.get_experiment_by_name("captioner").experiment_id
    assert lifecycle.find_run(client, experiment, "captioner-smoke-x7k2p") is None  # no stray run

"""The Kubeflow Pipelines v2 / Vertex spec of the smoke profile: compiled only, never run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from configs import load_config

IMAGE = "registry.example/captioner:test"
ENV = {"CAPTIONER_DATA_DIR": "gs://bucket/captioner/data", "CAPTIONER_OUTPUT_ROOT": "gs://bucket/captioner/out"}
EXPECTED_TASKS = {
    "Flickr8kExampleGen", "StatisticsGen", "ImportSchemaGen", "ExampleValidator", "AnomaliesCheck",
    "FeatureExtractor", "Transform", "Trainer", "BleuEvaluator", "CaptionPusher", "RunRecorder",
    "latest_blessed_model_resolver-model-resolver", "latest_blessed_model_resolver-model-blessing-resolver",
}


TRACKING_SERVER = "http://mlflow.example:5000"
LOGGING_TASKS = ("Trainer", "BleuEvaluator", "CaptionPusher", "RunRecorder")


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    from pipelines.kubeflow_runner import compile_pipeline

    config = load_config("smoke", overrides={"mlflow.tracking_uri": TRACKING_SERVER}, env=ENV)
    output = compile_pipeline(config, tmp_path_factory.mktemp("kfp") / "pipeline.json", image=IMAGE,
                              data_fingerprint="abc123")
    return json.loads(output.read_text())


def dag_tasks(spec: dict) -> dict:
    """The pipeline's own tasks: under the exit handler's DAG when the spec has one."""
    root = spec["pipelineSpec"]["root"]["dag"]["tasks"]
    if "tfx-dag" in root:
        return spec["pipelineSpec"]["components"]["tfx-dag"]["dag"]["tasks"]
    return root


def topological_order(tasks: dict) -> list[str]:
    order, done = [], set()
    while len(order) < len(tasks):
        ready = sorted(t for t, v in tasks.items() if t not in done and set(v.get("dependentTasks", [])) <= done)
        assert ready, f"dependency cycle among {set(tasks) - done}"
        order += ready
        done |= set(ready)
    return order


def test_spec_has_every_task_with_its_dependencies(spec):
    tasks = dag_tasks(spec)
    assert set(tasks) == EXPECTED_TASKS
    assert {v["componentRef"]["name"] for v in tasks.values()} | {"tfx-dag", "MlflowRunEnd"} == set(spec["pipelineSpec"]["components"])
    assert "dependentTasks" not in tasks["Flickr8kExampleGen"]
    deps = {t: set(v.get("dependentTasks", [])) for t, v in tasks.items()}
    assert deps["StatisticsGen"] == {"Flickr8kExampleGen"}
    assert deps["AnomaliesCheck"] == {"ExampleValidator"}
    assert "AnomaliesCheck" in deps["FeatureExtractor"]  # no compute on data that failed validation
    assert deps["Transform"] == {"FeatureExtractor"} and deps["Trainer"] == {"Transform"}
    assert {"Trainer", "latest_blessed_model_resolver-model-resolver"} <= deps["BleuEvaluator"]
    assert deps["CaptionPusher"] == {"Trainer", "BleuEvaluator"}
    order = topological_order(tasks)
    chain = ["Flickr8kExampleGen", "StatisticsGen", "ExampleValidator", "AnomaliesCheck", "FeatureExtractor",
             "Transform", "Trainer", "BleuEvaluator", "CaptionPusher"]
    assert [t for t in order if t in chain] == chain


def test_spec_names_the_image_and_the_cluster_paths(spec):
    assert spec["displayName"] == "captioner-smoke"
    assert spec["runtimeConfig"]["gcsOutputDirectory"] == "gs://bucket/captioner/out/tfx"
    executors = spec["pipelineSpec"]["deploymentSpec"]["executors"]
    containers = [e["container"] for e in executors.values() if "container" in e]
    assert len(containers) == 12 and all(c["image"] == IMAGE for c in containers)  # 11 steps + the exit handler
    tasks = dag_tasks(spec)

    def param(task, name):
        return tasks[task]["inputs"]["parameters"][name]["runtimeValue"]["constantValue"]["stringValue"]

    assert param("Flickr8kExampleGen", "data_dir") == "gs://bucket/captioner/data"
    assert param("Flickr8kExampleGen", "data_fingerprint") == "abc123"
    assert json.loads(param("Flickr8kExampleGen", "splits")) == ["train", "dev", "test"]
    assert param("ImportSchemaGen", "schema_file") == "/app/data/schema/schema.pbtxt"
    assert param("CaptionPusher", "base_dir") == "gs://bucket/captioner/out/serving/models/captioner"


def test_cli_writes_the_spec(tmp_path, monkeypatch):
    from pipelines import kubeflow_runner

    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    out = tmp_path / "p.json"
    assert kubeflow_runner.main(["--profile", "smoke", "--output", str(out)]) == 0
    spec = json.loads(out.read_text())
    images = {e["container"]["image"] for e in spec["pipelineSpec"]["deploymentSpec"]["executors"].values()
              if "container" in e}
    assert images == {kubeflow_runner.DEFAULT_IMAGE}


def test_the_dockerfile_installs_the_lock_where_the_compiled_spec_expects_the_project():
    """No Docker engine here to build it: check the contract with kubeflow_runner instead."""
    from pipelines.kubeflow_runner import DEFAULT_IMAGE_REPO_ROOT

    repo = Path(__file__).resolve().parent.parent
    dockerfile = (repo / "Dockerfile").read_text()
    assert f"WORKDIR {DEFAULT_IMAGE_REPO_ROOT}\n" in dockerfile
    assert "uv pip sync --system --no-cache requirements.lock" in dockerfile
    assert "FROM python:3.10" in dockerfile  # TFX 1.16 needs Python < 3.11
    beam = next(line for line in (repo / "requirements.lock").read_text().splitlines() if line.startswith("apache-beam"))
    assert f"beam_python3.10_sdk:{beam.split('==')[1]}" in dockerfile  # workers boot the locked Beam


def _string_param(tasks, task, name):
    return tasks[task]["inputs"]["parameters"][name]["runtimeValue"]["constantValue"]["stringValue"]


def test_the_steps_that_log_carry_the_tracking_server_and_the_others_do_not(spec):
    tasks = dag_tasks(spec)
    trainer = json.loads(_string_param(tasks, "Trainer", "custom_config"))["tracking"]
    settings = [trainer] + [json.loads(_string_param(tasks, t, "tracking")) for t in LOGGING_TASKS[1:]]
    for task, s in zip(LOGGING_TASKS, settings):
        assert (s["tracking_uri"], s["experiment"], s["pipeline_name"]) == (TRACKING_SERVER, "captioner", "captioner-smoke"), task
        assert s["artifact_location"] is None and s["pipeline_run_id"] is None, task  # the server decides; set at run time
    assert json.loads(_string_param(tasks, "RunRecorder", "params"))["mlflow.tracking_uri"] == TRACKING_SERVER
    assert json.loads(_string_param(tasks, "RunRecorder", "dataset"))["source"] == "gs://bucket/captioner/data"
    assert not any("tracking" in tasks[t].get("inputs", {}).get("parameters", {}) for t in tasks if t not in LOGGING_TASKS)


def test_without_a_tracking_server_the_spec_logs_nowhere_and_says_so(tmp_path, caplog):
    from pipelines.kubeflow_runner import compile_pipeline

    output = compile_pipeline(load_config("smoke", env=ENV), tmp_path / "pipeline.json", image=IMAGE)
    spec = json.loads(output.read_text())
    tasks = dag_tasks(spec)
    assert "MlflowRunEnd" not in spec["pipelineSpec"]["root"]["dag"]["tasks"]
    assert all(_string_param(tasks, t, "tracking") == "" for t in LOGGING_TASKS[1:])
    assert "tracking" not in json.loads(_string_param(tasks, "Trainer", "custom_config"))
    assert "the steps will record nothing in MLflow" in caplog.text


def test_an_exit_handler_gets_the_final_status_and_the_tracking_server(spec):
    root = spec["pipelineSpec"]["root"]["dag"]["tasks"]
    handler = root["MlflowRunEnd"]
    assert handler["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"  # runs after a failure too
    assert handler["dependentTasks"] == ["tfx-dag"]
    assert "taskFinalStatus" in handler["inputs"]["parameters"]["final_status"]
    assert json.loads(_string_param(root, "MlflowRunEnd", "tracking"))["tracking_uri"] == TRACKING_SERVER

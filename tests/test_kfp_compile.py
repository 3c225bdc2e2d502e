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
    assert param("CaptionPusher", "base_dir") == "gs://bucket/captioner/out/serving/models/captioner-smoke"


def test_cli_writes_both_targets(tmp_path, monkeypatch):
    import yaml

    from pipelines import kubeflow_runner

    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(kubeflow_runner, "default_output",
                        lambda config, target: tmp_path / kubeflow_runner.TARGET_FILES[target])
    assert kubeflow_runner.main(["--profile", "smoke"]) == 0
    vertex = json.loads((tmp_path / "pipeline.json").read_text())["pipelineSpec"]
    kubeflow = next(yaml.safe_load_all((tmp_path / "pipeline.yaml").read_text()))
    for spec in (vertex, kubeflow):
        images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values() if "container" in e}
        assert images == {kubeflow_runner.DEFAULT_IMAGE}
    with pytest.raises(SystemExit) as error:
        kubeflow_runner.main(["--profile", "smoke", "--output", str(tmp_path / "one.json")])
    assert error.value.code == 2  # one file for two targets: say which


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


# --- open-source Kubeflow Pipelines: pipeline.yaml ----------------------------------------

@pytest.fixture(scope="module")
def kfp_package_text(tmp_path_factory):
    from pipelines.kubeflow_runner import compile_pipeline

    config = load_config("smoke", overrides={"mlflow.tracking_uri": TRACKING_SERVER}, env=ENV)
    output = compile_pipeline(config, tmp_path_factory.mktemp("kfp") / "pipeline.yaml", image=IMAGE,
                              data_fingerprint="abc123", target="kubeflow")
    return output.read_text()


@pytest.fixture(scope="module")
def kfp_package(kfp_package_text):
    import yaml

    return list(yaml.safe_load_all(kfp_package_text))


def test_the_kubeflow_package_is_what_the_kfp_client_uploads(kfp_package):
    """The KFP client reads the first document as a PipelineSpec and the rest as the platform
    spec (kfp.client.client._extract_pipeline_yaml); the API server wants schema 2.1.0."""
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    assert len(kfp_package) == 2
    spec = json_format.ParseDict(kfp_package[0], pipeline_spec_pb2.PipelineSpec())
    platform = json_format.ParseDict(kfp_package[1], pipeline_spec_pb2.PlatformSpec())
    assert spec.schema_version == "2.1.0" and spec.pipeline_info.name == "captioner-smoke"
    assert set(platform.platforms) == {"kubernetes"}


def test_the_kubeflow_package_has_no_resolver_and_the_gate_no_baseline(kfp_package):
    """Open-source KFP rejects resolver executors; without one the evaluator gates on thresholds."""
    spec = kfp_package[0]
    assert not any("resolver" in e for e in spec["deploymentSpec"]["executors"].values())
    tasks = dag_tasks({"pipelineSpec": spec})
    assert set(tasks) == {t for t in EXPECTED_TASKS if "resolver" not in t}
    assert "baseline_model" not in tasks["BleuEvaluator"].get("inputs", {}).get("artifacts", {})
    assert "MlflowRunEnd" in spec["root"]["dag"]["tasks"]  # a failed run still ends FAILED


def test_every_kubeflow_step_gets_the_run_id_from_its_pod_label(kfp_package):
    from components.tracked import RUN_ID_ENV

    spec, platform = kfp_package
    containers = {label for label, e in spec["deploymentSpec"]["executors"].items() if "container" in e}
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert set(executors) == containers and len(containers) == 12  # 11 steps + the exit handler
    for label in containers:
        assert executors[label] == {"fieldPathAsEnv": [{"name": RUN_ID_ENV, "fieldPath": "metadata.labels['pipeline/runid']"}]}
    tasks = dag_tasks({"pipelineSpec": spec})
    settings = json.loads(tasks["BleuEvaluator"]["inputs"]["parameters"]["tracking"]["runtimeValue"]["constant"])
    assert settings["tracking_uri"] == TRACKING_SERVER and settings["pipeline_run_id"] is None  # not in the cache key


def test_the_kubeflow_package_names_its_pipeline_root_and_uses_no_yaml_aliases(kfp_package, kfp_package_text):
    """Without a default root a run created without pipeline_root= has nowhere to write; and
    YAML anchors (one dict shared by every executor) are not what other KFP tools expect."""
    assert kfp_package[0]["defaultPipelineRoot"] == "gs://bucket/captioner/out/tfx"
    assert "&id" not in kfp_package_text and "*id" not in kfp_package_text


def test_a_kubeflow_package_must_be_yaml(tmp_path):
    from pipelines.kubeflow_runner import compile_pipeline

    config = load_config("smoke", env=ENV)
    with pytest.raises(ValueError, match=r"\.yaml or \.yml"):
        compile_pipeline(config, tmp_path / "pipeline.json", image=IMAGE, data_fingerprint="abc123", target="kubeflow")
    assert not (tmp_path / "pipeline.json").exists()


def test_for_older_kfp_backends_the_package_can_leave_out_the_exit_handler(tmp_path, monkeypatch):
    """Backends before kubeflow/pipelines#11953 reject the whole run over the exit handler's
    final-status input; --no-exit-handler compiles one they accept, still tracking the steps."""
    import yaml

    from pipelines import kubeflow_runner

    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    output = tmp_path / "old-backend.yaml"
    assert kubeflow_runner.main(["--profile", "smoke", "--set", f"mlflow.tracking_uri={TRACKING_SERVER}",
                                 "--target", "kubeflow", "--output", str(output), "--no-exit-handler"]) == 0
    spec = next(yaml.safe_load_all(output.read_text()))
    assert "taskFinalStatus" not in output.read_text()
    tasks = spec["root"]["dag"]["tasks"]
    assert "MlflowRunEnd" not in tasks and "Trainer" in tasks
    tracking = tasks["BleuEvaluator"]["inputs"]["parameters"]["tracking"]["runtimeValue"]["constant"]
    assert json.loads(tracking)["tracking_uri"] == TRACKING_SERVER

"""Shared fixtures: one smoke pipeline run per test session, inspected by many tests; and
the kind of every test (unit, data, model, e2e), so each kind runs on its own.

The run is expensive (TFX, TF and Beam start-up plus every component), so tests that only
read its outputs share it through the session-scoped `smoke_run` fixture instead of
running the pipeline themselves. It records itself in a real MLflow tracking server
(`mlflow_server`, one per session, stopped with all its processes at the end).
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from pathlib import Path

import pytest

from configs import Config
from tests.runs import smoke_config


# Tests by kind, as Made With ML splits them. `e2e` tests mark themselves (they run a
# pipeline or a real server); of the others, these modules test data handling or models,
# and every other module is a unit test of code (`make test-fast` runs only those).
DATA_TESTS = {
    "test_anomalies_check", "test_download", "test_ingest", "test_layout", "test_pinned_download",
    "test_pinned_ingest", "test_pinned_layout", "test_pinned_records", "test_resolve", "test_synthetic",
    "test_transform",
}
MODEL_TESTS = {
    "test_backbones", "test_decoder", "test_epoch_selection", "test_feature_extractor", "test_image_budget",
    "test_pinned_beam", "test_pinned_images", "test_training_options",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("e2e"):
            continue
        module = item.module.__name__.rsplit(".", 1)[-1]
        kind = "data" if module in DATA_TESTS else "model" if module in MODEL_TESTS else "unit"
        item.add_marker(getattr(pytest.mark, kind))


@dataclasses.dataclass(frozen=True)
class SmokeRun:
    config: Config
    pipeline_root: Path
    metadata_path: Path
    pipeline_run_id: str | None = None  # the TFX run id (pipeline_run context in ML Metadata)
    mlflow_run_id: str | None = None  # the MLflow run recording it, on `mlflow_server`
    console: str | None = None  # what the run printed, when it ran as `python -m pipelines.local_runner`
    # What an MLflow UI showed while the run went on, polled about twice a second:
    # (MLflow run id, its status, its `loss` values so far as (epoch, timestamp)).
    mlflow_samples: tuple[tuple[str, str, tuple[tuple[int, int], ...]], ...] = ()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    """A real `mlflow server` on 127.0.0.1 (sqlite store, proxied artifacts) for the session."""
    from tests import mlflow_server as server_lib

    server = server_lib.start(tmp_path_factory.mktemp("mlflow_server"))
    yield server
    survivors = server_lib.stop(server)
    assert survivors == [], f"mlflow server processes survived the session: {survivors}"


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory: pytest.TempPathFactory, mlflow_server) -> SmokeRun:
    """Runs the smoke pipeline once for the whole session, recorded in `mlflow_server`."""
    config = smoke_config(tmp_path_factory.mktemp("smoke_run"), **{"mlflow.tracking_uri": mlflow_server.uri})
    return _run_pipeline(config)


@pytest.fixture(scope="session")
def attention_run(tmp_path_factory: pytest.TempPathFactory, mlflow_server) -> SmokeRun:
    """The smoke pipeline with the attention decoder (profile smoke_attention), once a session.

    Run as a user runs it, `python -m pipelines.local_runner` in its own process with output
    to a pipe, so its console can be checked (`console`), and recorded in `mlflow_server`,
    which is polled meanwhile as a UI would (`mlflow_samples`).
    """
    return _run_pipeline_command(tmp_path_factory.mktemp("attention_run"), "smoke_attention", mlflow_server.uri)


def _run_pipeline_command(output_root: Path, profile: str, tracking_uri: str) -> SmokeRun:
    import re
    import subprocess
    import sys
    import threading

    from tracking.run_record import find_run_id

    config = smoke_config(output_root, profile=profile, **{"mlflow.tracking_uri": tracking_uri})
    overrides = [f"--set=pipeline.output_root={config.output_root}", f"--set=data.data_dir={config.data_dir}",
                 f"--set=push.base_dir={config.push_dir}", f"--set=mlflow.tracking_uri={tracking_uri}"]
    # As a user's shell: no CAPTIONER_* (env beats --set), no TF log level the session set.
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPTIONER_") and k != "TF_CPP_MIN_LOG_LEVEL"}
    samples: list = []
    stop = threading.Event()
    poller = threading.Thread(target=_poll_mlflow, args=(config, stop, samples), daemon=True)
    poller.start()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "pipelines.local_runner", "--profile", profile, *overrides],
            cwd=Path(__file__).resolve().parent.parent, env=env, capture_output=True, text=True, timeout=1200,
        )
    finally:
        stop.set()
        poller.join(timeout=30)
    console = result.stderr + result.stdout
    assert result.returncode == 0, console
    root = config.output_root
    mlflow_run = re.search(r"^MLflow run ([0-9a-f]{32}) in ", result.stdout, re.M)
    return SmokeRun(config, root / "tfx", root / "metadata.db", find_run_id(root / "metadata.db", config.pipeline.name),
                    mlflow_run.group(1) if mlflow_run else None, console, tuple(samples))


def _poll_mlflow(config: Config, stop, samples: list) -> None:
    """Until `stop`: the runs of config's pipeline on its tracking server and their `loss` so far."""
    from mlflow import MlflowClient

    client = MlflowClient(config.mlflow.tracking_uri)
    while not stop.wait(0.5):
        try:
            experiment = client.get_experiment_by_name(config.mlflow.experiment)
            if experiment is None:
                continue
            runs = client.search_runs([experiment.experiment_id],
                                      filter_string=f"tags.pipeline_name = '{config.pipeline.name}'")
            for run in runs:
                loss = client.get_metric_history(run.info.run_id, "loss")
                samples.append((run.info.run_id, run.info.status, tuple((m.step, m.timestamp) for m in loss)))
        except Exception:  # noqa: BLE001 - a sample missed while the server is busy
            continue


def _run_pipeline(config: Config) -> SmokeRun:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    warnings.filterwarnings("ignore", category=FutureWarning)
    from pipelines import local_runner

    paths = local_runner.run(config)
    return SmokeRun(config, paths.pipeline_root, paths.metadata_path, paths.pipeline_run_id, paths.mlflow_run_id)

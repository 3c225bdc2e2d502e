"""Beam options from the config's `beam` section (pipelines/pipeline.py::beam_pipeline_args)."""

from __future__ import annotations

import logging

import pytest

from configs import load_config
from pipelines.pipeline import beam_pipeline_args


def test_multi_processing_with_two_workers():
    config = load_config("smoke", {"beam.direct_running_mode": "multi_processing", "beam.direct_num_workers": 2}, env={})
    assert beam_pipeline_args(config) == ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]


def test_extra_args_follow_the_direct_runner_options():
    extra = ["--runner=FlinkRunner", "--flink_master=flink:8081", "--environment_type=LOOPBACK"]
    config = load_config("smoke", {"beam.extra_args": extra}, env={})
    assert beam_pipeline_args(config) == ["--direct_running_mode=in_memory", "--direct_num_workers=1", *extra]


# The runner settings documented in README.md (beam.extra_args): every flag must be one Beam knows.
RUNNER_ARGS = {
    "FlinkRunner": [
        "--runner=FlinkRunner", "--flink_master=flink-jobmanager:8081", "--flink_version=1.18",
        "--parallelism=4", "--environment_type=DOCKER", "--environment_config=registry.example/captioner:latest",
    ],
    "SparkRunner": [
        "--runner=SparkRunner", "--spark_master_url=spark://spark-master:7077", "--spark_version=3",
        "--environment_type=DOCKER", "--environment_config=registry.example/captioner:latest",
    ],
    "DataflowRunner": [
        "--runner=DataflowRunner", "--project=my-project", "--region=europe-west1",
        "--temp_location=gs://my-bucket/beam-tmp",
        "--sdk_container_image=europe-docker.pkg.dev/my-project/ml/captioner:latest",
        "--machine_type=n1-standard-4", "--max_num_workers=8", "--disk_size_gb=50",
    ],
}


@pytest.mark.parametrize("runner", sorted(RUNNER_ARGS))
def test_documented_runner_args_parse_with_beam(runner, caplog):
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

    config = load_config("smoke", {"beam.extra_args": RUNNER_ARGS[runner]}, env={})
    with caplog.at_level(logging.WARNING):
        options = PipelineOptions(beam_pipeline_args(config))
        options.get_all_options()
    assert options.view_as(StandardOptions).runner == runner
    assert "Discarding unparseable args" not in caplog.text

"""Shared fixtures: one smoke pipeline run per test session, inspected by many tests.

The run is expensive (TFX, TF and Beam start-up plus every component), so tests that only
read its outputs share it through the session-scoped `smoke_run` fixture instead of
running the pipeline themselves.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from pathlib import Path

import pytest

from configs import Config
from tests.runs import smoke_config


@dataclasses.dataclass(frozen=True)
class SmokeRun:
    config: Config
    pipeline_root: Path
    metadata_path: Path


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> SmokeRun:
    """Runs the smoke pipeline once for the whole session."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    warnings.filterwarnings("ignore", category=FutureWarning)
    from pipelines import local_runner

    config = smoke_config(tmp_path_factory.mktemp("smoke_run"))
    paths = local_runner.run(config)
    return SmokeRun(config, paths.pipeline_root, paths.metadata_path)

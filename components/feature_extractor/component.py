"""The FeatureExtractor component spec: raw Examples and their schema in, feature Examples out.

Used by pipelines/pipeline.py between the validation of the raw examples and Transform.
The outputs are `features`, a standard Examples artifact (so tf.Transform reads it
directly), and `features_schema`, the Schema it conforms to. Everything that changes the
features is one of the spec's PARAMETERS, so TFX's cache recomputes features only when one
of them or the input examples change. The work is in extract.py, wired up by executor.py.
"""

from __future__ import annotations

import hashlib
import os

from tfx import types
from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from components.feature_extractor import executor, extract


class FeatureExtractorSpec(ComponentSpec):
    PARAMETERS = {
        "backbone": ExecutionParameter(type=str),
        # "imagenet", or "" for random weights (tests only).
        "weights": ExecutionParameter(type=str),
        # A local weights file, or "" for the backbone's default source.
        "weights_path": ExecutionParameter(type=str),
        # sha256 of the weights_path file when the pipeline was built: a file replaced at the
        # same path still invalidates the cache.
        "weights_fingerprint": ExecutionParameter(type=str),
        # extract.FEATURE_VERSION: bumped when code changes the features.
        "feature_version": ExecutionParameter(type=int),
        "store_grid": ExecutionParameter(type=bool),
        # > 0: also store the map entering this backbone block (features.finetune_from_block).
        "map_from_block": ExecutionParameter(type=int),
        "batch_size": ExecutionParameter(type=int),
    }
    INPUTS = {
        "examples": ChannelParameter(type=standard_artifacts.Examples),
        "schema": ChannelParameter(type=standard_artifacts.Schema),
    }
    OUTPUTS = {
        "features": ChannelParameter(type=standard_artifacts.Examples),
        # The schema of `features` ("schema" is taken by the input).
        "features_schema": ChannelParameter(type=standard_artifacts.Schema),
    }


class FeatureExtractor(base_beam_component.BaseBeamComponent):
    """Replaces each example's image by its backbone features (and, optionally, grid or block map)."""

    SPEC_CLASS = FeatureExtractorSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)

    def __init__(
        self,
        examples: types.BaseChannel,
        schema: types.BaseChannel,
        backbone: str,
        weights: str | None,
        weights_path: str | None,
        batch_size: int,
        store_grid: bool,
        map_from_block: int = 0,
    ):
        super().__init__(
            spec=FeatureExtractorSpec(
                examples=examples,
                schema=schema,
                backbone=backbone,
                weights=weights or "",
                weights_path=weights_path or "",
                weights_fingerprint=_file_sha256(weights_path),
                feature_version=extract.FEATURE_VERSION,
                store_grid=bool(store_grid),
                map_from_block=int(map_from_block),
                batch_size=int(batch_size),
                features=types.Channel(type=standard_artifacts.Examples),
                features_schema=types.Channel(type=standard_artifacts.Schema),
            )
        )


def _file_sha256(path: str | None) -> str:
    """The file's sha256, or "" when there is no path or it is not readable here."""
    if not path or not os.path.isfile(path):
        return ""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()

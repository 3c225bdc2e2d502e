"""The Flickr8kExampleGen component spec: a Flickr8k-layout directory in, Examples out.

Used by pipelines/pipeline.py. The spec only declares parameters and artifacts; the work
is in ingest.py (Beam) and records.py (one image), wired up by executor.py.
"""

from __future__ import annotations

import json

from tfx import types
from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from components.flickr8k_example_gen import executor


class IngestionReport(types.Artifact):
    """ingestion_report.json: skipped records by reason, totals and timings of one run."""

    TYPE_NAME = "captioner.IngestionReport"


class Flickr8kExampleGenSpec(ComponentSpec):
    PARAMETERS = {
        "data_dir": ExecutionParameter(type=str),
        # JSON list of split names, e.g. ["train", "dev", "test"].
        "splits": ExecutionParameter(type=str),
        "max_skipped_fraction": ExecutionParameter(type=float),
        "max_image_pixels": ExecutionParameter(type=int),
        "num_shards": ExecutionParameter(type=int),
        # Changes whenever the directory's files change, so TFX's cache never serves
        # examples of an older snapshot (see data/fingerprint.py).
        "data_fingerprint": ExecutionParameter(type=str),
    }
    INPUTS = {}
    OUTPUTS = {
        "examples": ChannelParameter(type=standard_artifacts.Examples),
        "report": ChannelParameter(type=IngestionReport),
    }


class Flickr8kExampleGen(base_beam_component.BaseBeamComponent):
    """Ingests images and captions in the Flickr8k layout, skipping and counting bad records."""

    SPEC_CLASS = Flickr8kExampleGenSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)

    def __init__(
        self,
        data_dir: str,
        splits: list[str],
        data_fingerprint: str,
        max_skipped_fraction: float,
        max_image_pixels: int,
        num_shards: int,
    ):
        super().__init__(
            spec=Flickr8kExampleGenSpec(
                data_dir=data_dir,
                splits=json.dumps(list(splits)),
                max_skipped_fraction=max_skipped_fraction,
                max_image_pixels=max_image_pixels,
                num_shards=num_shards,
                data_fingerprint=data_fingerprint,
                examples=types.Channel(type=standard_artifacts.Examples),
                report=types.Channel(type=IngestionReport),
            )
        )

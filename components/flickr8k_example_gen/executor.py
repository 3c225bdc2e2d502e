"""TFX glue for Flickr8kExampleGen: reads exec properties, calls ingest, labels artifacts."""

from __future__ import annotations

import json
from typing import Any

from tfx import types
from tfx.components.util import examples_utils
from tfx.dsl.components.base import base_beam_executor
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils

from components.flickr8k_example_gen import ingest


class Executor(base_beam_executor.BaseBeamExecutor):
    def Do(
        self,
        input_dict: dict[str, list[types.Artifact]],
        output_dict: dict[str, list[types.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        examples = artifact_utils.get_single_instance(output_dict["examples"])
        report = artifact_utils.get_single_instance(output_dict["report"])
        result = ingest.run_ingestion(
            data_dir=exec_properties["data_dir"],
            splits=json.loads(exec_properties["splits"]),
            out_dir=examples.uri,
            report_dir=report.uri,
            make_pipeline=self._make_beam_pipeline,
            max_skipped_fraction=float(exec_properties["max_skipped_fraction"]),
            max_image_pixels=int(exec_properties["max_image_pixels"]),
            num_shards=int(exec_properties["num_shards"]),
        )
        examples.split_names = artifact_utils.encode_split_names(result.splits)
        examples_utils.set_payload_format(examples, example_gen_pb2.PayloadFormat.FORMAT_TF_EXAMPLE)
        for split, count in result.examples_per_split.items():
            examples.set_int_custom_property(f"num_examples_{split}", count)
        report.set_string_custom_property("skipped_by_reason", json.dumps(result.report["skipped_by_reason"]))
        report.set_int_custom_property("skipped_images", result.report["skipped_images"])
        report.set_int_custom_property("skipped_caption_lines", result.report["skipped_caption_lines"])

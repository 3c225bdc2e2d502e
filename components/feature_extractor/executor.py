"""TFX glue for FeatureExtractor: reads exec properties, runs extract per split, labels artifacts."""

from __future__ import annotations

import os
import time
from typing import Any

from tfx import types
from tfx.components.util import examples_utils
from tfx.dsl.components.base import base_beam_executor
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils
from tfx.utils import io_utils

from components.feature_extractor import extract, feature_model, features_schema
from models.backbones import get_backbone
from models.contract import SCHEMA_FILE



class Executor(base_beam_executor.BaseBeamExecutor):
    def Do(
        self,
        input_dict: dict[str, list[types.Artifact]],
        output_dict: dict[str, list[types.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        examples = artifact_utils.get_single_instance(input_dict["examples"])
        raw_schema_uri = artifact_utils.get_single_uri(input_dict["schema"])
        features = artifact_utils.get_single_instance(output_dict["features"])
        schema_uri = artifact_utils.get_single_uri(output_dict["features_schema"])
        if examples_utils.get_payload_format(examples) != example_gen_pb2.PayloadFormat.FORMAT_TF_EXAMPLE:
            raise ValueError(f"{examples.uri}: FeatureExtractor reads tf.Examples only")

        args = feature_model.BackboneArgs(
            name=exec_properties["backbone"],
            weights=exec_properties["weights"] or None,
            weights_path=exec_properties["weights_path"] or None,
            map_from_block=int(exec_properties["map_from_block"]),
        )
        store_grid = _as_bool(exec_properties["store_grid"])
        backbone = get_backbone(args.name, args.weights, args.weights_path)
        map_shape = backbone.map_shape(args.map_from_block) if args.map_from_block else None
        raw_schema = io_utils.SchemaReader().read(os.path.join(raw_schema_uri, SCHEMA_FILE))
        schema = features_schema.features_schema(
            raw_schema, backbone.feature_dim, backbone.grid_shape if store_grid else None, map_shape
        )
        splits = artifact_utils.decode_split_names(examples.split_names)
        features.split_names = artifact_utils.encode_split_names(splits)
        examples_utils.set_payload_format(features, example_gen_pb2.PayloadFormat.FORMAT_TF_EXAMPLE)

        started = time.monotonic()
        with self._make_beam_pipeline() as pipeline:
            for split in splits:
                extract.extract_split(
                    pipeline,
                    input_pattern=os.path.join(artifact_utils.get_split_uri([examples], split), "*.gz"),
                    output_prefix=os.path.join(
                        artifact_utils.get_split_uri([features], split), extract.OUTPUT_PREFIX
                    ),
                    backbone_args=args,
                    batch_size=int(exec_properties["batch_size"]),
                    store_grid=store_grid,
                    split=split,
                    total=_split_count(examples, split),
                )
        metrics = extract.split_metrics(pipeline.result)
        extract.log_summary(metrics, time.monotonic() - started)

        io_utils.write_pbtxt_file(os.path.join(schema_uri, SCHEMA_FILE), schema)

        features.set_string_custom_property("backbone", args.name)
        features.set_int_custom_property("feature_dim", backbone.feature_dim)
        if store_grid:
            features.set_string_custom_property("grid_shape", ",".join(map(str, backbone.grid_shape)))
        if map_shape:
            features.set_int_custom_property("map_from_block", args.map_from_block)
            features.set_string_custom_property("map_shape", ",".join(map(str, map_shape)))
        for split in splits:
            features.set_int_custom_property(f"num_examples_{split}", metrics.get(split, {}).get("images", 0))


def _split_count(examples: types.Artifact, split: str) -> int | None:
    """The split's example count as Flickr8kExampleGen recorded it (None from other example gens)."""
    key = f"num_examples_{split}"
    return examples.get_int_custom_property(key) if examples.has_custom_property(key) else None


def _as_bool(value: Any) -> bool:
    """TFX stores a bool exec property as the JSON string "true"/"false"; accept either form."""
    return value.strip().lower() in ("true", "1") if isinstance(value, str) else bool(value)

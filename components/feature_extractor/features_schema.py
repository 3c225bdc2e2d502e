"""The schema of the features artifact, derived from the curated raw schema.

Used by the FeatureExtractor executor, which writes it beside the features for Transform.
"""

from __future__ import annotations

import numpy as np
from tensorflow_metadata.proto.v0 import schema_pb2

from components.feature_extractor.examples import DROPPED_KEYS
from models.contract import IMAGE_FEATURES_KEY, IMAGE_GRID_KEY, IMAGE_ID_KEY, IMAGE_MAP_KEY


def features_schema(
    raw_schema: schema_pb2.Schema,
    feature_dim: int,
    grid_shape: tuple[int, int, int] | None = None,
    map_shape: tuple[int, int, int] | None = None,
) -> schema_pb2.Schema:
    """The curated raw schema without the image, plus the features (and grid, and block map).

    tf.Transform parses the features artifact with this schema: `image_id` becomes a dense
    [1] string, `captions` stays variable-length, `image/features` is a dense [feature_dim]
    float and `image/grid` (or `image/block_map`) a dense [h*w*c] float (reshape row-major
    to (h, w, c)).
    """
    schema = schema_pb2.Schema()
    schema.CopyFrom(raw_schema)
    names = [f.name for f in schema.feature]
    if IMAGE_ID_KEY not in names:
        raise ValueError(f"the raw schema has no {IMAGE_ID_KEY!r} feature; it has {names}")
    kept = [f for f in schema.feature if f.name not in DROPPED_KEYS]
    del schema.feature[:]
    schema.feature.extend(kept)
    for feature in schema.feature:
        if feature.name == IMAGE_ID_KEY:
            feature.shape.CopyFrom(_shape(1))  # replaces value_count (a oneof)
    schema.feature.append(_float_feature(IMAGE_FEATURES_KEY, feature_dim))
    if grid_shape is not None:
        schema.feature.append(_float_feature(IMAGE_GRID_KEY, int(np.prod(grid_shape))))
    if map_shape is not None:
        schema.feature.append(_float_feature(IMAGE_MAP_KEY, int(np.prod(map_shape))))
    return schema


def _shape(size: int) -> schema_pb2.FixedShape:
    return schema_pb2.FixedShape(dim=[schema_pb2.FixedShape.Dim(size=size)])


def _float_feature(name: str, size: int) -> schema_pb2.Feature:
    feature = schema_pb2.Feature(name=name, type=schema_pb2.FLOAT, shape=_shape(size))
    feature.presence.min_fraction = 1.0
    feature.presence.min_count = 1
    return feature

"""tf.Examples in and out of the feature step: parse raw examples, build feature examples.

Used by extract.py. A feature example is the raw example without the image
(`image/encoded`, `image/height`, `image/width`) plus `image/features`, the pooled vector,
and optionally `image/grid`, the spatial map flattened row-major (h, w, c), or
`image/block_map`, the map entering a fine-tuned block, flattened the same way.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import tensorflow as tf

from models.contract import (
    IMAGE_ENCODED_KEY,
    IMAGE_FEATURES_KEY,
    IMAGE_GRID_KEY,
    IMAGE_HEIGHT_KEY,
    IMAGE_ID_KEY,
    IMAGE_MAP_KEY,
    IMAGE_WIDTH_KEY,
)

# The image and its size are not needed once the features exist.
DROPPED_KEYS = (IMAGE_ENCODED_KEY, IMAGE_HEIGHT_KEY, IMAGE_WIDTH_KEY)


def parse_example(serialized: bytes) -> tf.train.Example:
    return tf.train.Example.FromString(serialized)


def as_example(raw: tf.train.Example | bytes | Mapping[str, Any]) -> tf.train.Example:
    """A raw example as a tf.train.Example; dicts map keys to bytes/str/int/float or lists."""
    if isinstance(raw, tf.train.Example):
        return raw
    if isinstance(raw, bytes):
        return parse_example(raw)
    example = tf.train.Example()
    for key, value in raw.items():
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        feature = example.features.feature[key]
        if all(isinstance(v, (bytes, str)) for v in values):
            feature.bytes_list.value.extend(v.encode("utf-8") if isinstance(v, str) else v for v in values)
        elif all(isinstance(v, (int, np.integer)) for v in values):
            feature.int64_list.value.extend(int(v) for v in values)
        else:
            feature.float_list.value.extend(float(v) for v in values)
    return example


def single_bytes(example: tf.train.Example, key: str) -> bytes:
    feature = example.features.feature.get(key)
    if feature is None or len(feature.bytes_list.value) != 1:
        raise ValueError(f"example {image_id_of(example)!r} has no single bytes value for {key!r}")
    return feature.bytes_list.value[0]


def image_id_of(example: tf.train.Example) -> str:
    feature = example.features.feature.get(IMAGE_ID_KEY)
    values = feature.bytes_list.value if feature is not None else []
    return values[0].decode("utf-8", "replace") if values else "<no image_id>"


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def float_feature_bytes(values: np.ndarray) -> bytes:
    """A float_list Feature in its wire format (packed little-endian float32).

    Equal to `Feature(float_list=FloatList(value=values)).SerializeToString()`, but without
    a Python float object per value, which for a grid of tens of thousands of floats would
    cost a sizeable share of the backbone's time per image (bench/features.py measures it).
    """
    packed = np.ascontiguousarray(values, dtype="<f4").reshape(-1).tobytes()
    float_list = b"\x0a" + _varint(len(packed)) + packed  # FloatList.value = 1, packed
    return b"\x12" + _varint(len(float_list)) + float_list  # Feature.float_list = 2


def float_feature(values: np.ndarray) -> tf.train.Feature:
    """`float_feature_bytes` parsed: a float_list Feature of `values`."""
    return tf.train.Feature.FromString(float_feature_bytes(values))


def output_example(
    raw: tf.train.Example, pooled: np.ndarray, grid: np.ndarray | None = None, block_map: np.ndarray | None = None
) -> tf.train.Example:
    """The raw example without the image, plus its features (and grid or block map, row-major).

    The features are parsed straight into the example's map: `CopyFrom` of a parsed Feature
    copies the whole grid a second time, a cost the feature benchmark showed.
    """
    out = tf.train.Example()
    for key, feature in raw.features.feature.items():
        if key not in DROPPED_KEYS:
            out.features.feature[key].CopyFrom(feature)
    out.features.feature[IMAGE_FEATURES_KEY].ParseFromString(float_feature_bytes(pooled))
    if grid is not None:
        out.features.feature[IMAGE_GRID_KEY].ParseFromString(float_feature_bytes(grid))
    if block_map is not None:
        out.features.feature[IMAGE_MAP_KEY].ParseFromString(float_feature_bytes(block_map))
    return out

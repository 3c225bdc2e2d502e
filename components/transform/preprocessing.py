"""The tf.Transform `preprocessing_fn` of the pipeline's Transform component.

Called by TFX Transform (pipelines/pipeline.py passes
`preprocessing_fn="components.transform.preprocessing.preprocessing_fn"` and
`custom_config={"min_count": ..., "max_length": ...}`) and by tests/test_transform.py.

Input: one tf.Example per image, `image_id` (bytes), `captions` (bytes, varlen: every
caption of the image), `image/features` (float [D]) and optionally `image/grid` or `image/block_map`.
Output, per image:

  caption_ids     int64, VarLen (a 2-D SparseTensor in the graph), ncaps * max_length ids:
                  caption i is ids[i*max_length:(i+1)*max_length] = <start> words <end> 0...
                  (the Trainer reshapes the densified values to [-1, max_length]).
  num_captions    int64 scalar (FixedLen []).
  image_id        bytes scalar, unchanged.
  image_features  float [D], `image/features` unchanged.
  image_grid      float [G], `image/grid` unchanged (only when the input has it).
  image_map       float [M], `image/block_map` unchanged (only when the input has it).

Ids: 0 is padding, 1..V are the vocabulary file's entries in its order (see
models/vocabulary.py), V+1 is <unk>. The vocabulary (`tft.vocabulary`, file
`contract.VOCAB_NAME`) is
computed on the analysed split(s) only, after truncation, and keeps words seen at least
`min_count` times, most frequent first; <start> and <end> are reserved tokens, always its
first two entries, so <start> is id 1 and <end> id 2.

Schema notes: `captions` may arrive sparse (VarLen, the usual case), ragged or dense.
`image_id` may arrive as a [batch] tensor or, when its schema feature has no `shape`, as a
[batch, 1] SparseTensor; it is always output as a scalar. `image/features` and `image/grid`
are passed through as they arrive: give them `shape { dim { size: D } }` in the schema so
they stay FixedLen [D] (without a shape they arrive, and leave, as VarLen).

`caption_ids` is VarLen rather than ragged because a 2-D SparseTensor output is what
tf.Transform 1.16 writes as a plain `VarLenFeature` named `caption_ids` (a RaggedTensor
output would be stored as `caption_ids$ragged_values` with a RaggedFeature spec).
"""

from __future__ import annotations

from typing import Any, Mapping

import tensorflow as tf
import tensorflow_transform as tft

from models import text
from models.contract import (
    CAPTION_IDS_KEY,
    CAPTIONS_KEY,
    IMAGE_FEATURES_KEY,
    IMAGE_GRID_KEY,
    IMAGE_ID_KEY,
    IMAGE_MAP_KEY,
    NUM_CAPTIONS_KEY,
    TRANSFORMED_FEATURES_KEY,
    TRANSFORMED_GRID_KEY,
    TRANSFORMED_IMAGE_ID_KEY,
    TRANSFORMED_MAP_KEY,
    VOCAB_NAME,
)

_REQUIRED_CONFIG = ("min_count", "max_length")


def preprocessing_fn(
    inputs: Mapping[str, Any], custom_config: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Captions -> padded token ids; image features pass through (see the module docstring)."""
    min_count, max_length = _read_config(custom_config)

    captions = _as_ragged(inputs[CAPTIONS_KEY])  # [batch, (ncaps)] strings
    wrapped = wrap_captions(captions.values, max_length)  # [total_caps, (<= max_length)]

    vocab = tft.vocabulary(
        wrapped.flat_values,
        frequency_threshold=min_count if min_count > 1 else None,  # 1 would only warn
        vocab_filename=VOCAB_NAME,
        # Always present, always first: <start> is id 1 and <end> id 2.
        reserved_tokens=[text.START, text.END],
    )
    # Vocabulary index i -> id i + 1; out of vocabulary -> V + 1 (<unk>); 0 stays padding.
    ids = wrapped.with_flat_values(
        tft.apply_vocabulary(wrapped.flat_values, vocab, num_oov_buckets=1) + 1
    )
    padded = ids.to_tensor(default_value=0, shape=[None, max_length])  # [total_caps, L]
    per_image = tf.RaggedTensor.from_row_splits(
        tf.reshape(padded, [-1]), captions.row_splits * max_length, validate=False
    )

    outputs = {
        CAPTION_IDS_KEY: per_image.to_sparse(),
        NUM_CAPTIONS_KEY: tf.cast(captions.row_lengths(), tf.int64),
        TRANSFORMED_IMAGE_ID_KEY: _as_scalar(inputs[IMAGE_ID_KEY]),
        TRANSFORMED_FEATURES_KEY: inputs[IMAGE_FEATURES_KEY],
    }
    if IMAGE_GRID_KEY in inputs:
        outputs[TRANSFORMED_GRID_KEY] = inputs[IMAGE_GRID_KEY]
    if IMAGE_MAP_KEY in inputs:
        outputs[TRANSFORMED_MAP_KEY] = inputs[IMAGE_MAP_KEY]
    return outputs


def wrap_captions(captions: tf.Tensor, max_length: int) -> tf.RaggedTensor:
    """1-D caption strings -> ragged tokens `<start> w1 .. wk <end>`, k <= max_length - 2."""
    words = text.tokenize(text.normalize(captions))[:, : max_length - 2]
    n = tf.shape(captions, out_type=tf.int64)[0]
    start = tf.fill([n, 1], text.START)
    end = tf.fill([n, 1], text.END)
    return tf.concat([start, words, end], axis=1)


def _as_ragged(captions: Any) -> tf.RaggedTensor:
    """The `captions` input as ragged [batch, (ncaps)], whatever the schema made of it."""
    if isinstance(captions, tf.RaggedTensor):
        return captions
    if isinstance(captions, tf.SparseTensor):
        return tf.RaggedTensor.from_sparse(captions)
    captions = tf.convert_to_tensor(captions)
    if captions.shape.rank == 1:  # FixedLen [] : one caption per example
        captions = captions[:, tf.newaxis]
    return tf.RaggedTensor.from_tensor(captions)


def _as_scalar(feature: Any) -> tf.Tensor:
    """A one-value feature as a dense [batch] tensor.

    A schema feature without `shape` (e.g. `value_count { min: 1 max: 1 }` only, as in
    data/schema/schema.pbtxt) reaches the preprocessing_fn as a [batch, 1] SparseTensor.
    """
    if isinstance(feature, tf.SparseTensor):
        feature = tf.RaggedTensor.from_sparse(feature)
    if isinstance(feature, tf.RaggedTensor):
        return feature.to_tensor(shape=[None, 1])[:, 0]
    if feature.shape.rank == 2:
        return feature[:, 0]
    return feature


def _read_config(custom_config: Mapping[str, Any] | None) -> tuple[int, int]:
    config = dict(custom_config or {})
    missing = [k for k in _REQUIRED_CONFIG if k not in config]
    if missing:
        raise ValueError(
            f"Transform custom_config lacks {', '.join(missing)}; pass "
            "custom_config={'min_count': config.text.min_count, "
            "'max_length': config.text.max_length}"
        )
    min_count, max_length = int(config["min_count"]), int(config["max_length"])
    if max_length < 3:
        raise ValueError(
            f"max_length is {max_length}; it must hold <start>, a word and <end> (>= 3)"
        )
    if min_count < 1:
        raise ValueError(f"min_count is {min_count}; it must be >= 1")
    return min_count, max_length

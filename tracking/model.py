"""The captioner as an MLflow pyfunc model: JPEG/PNG bytes in, captions out.

MLflow loads this file itself ("models from code"): `mlflow.pyfunc.log_model` in
tracking/registry.py copies it into the logged model, and `mlflow.pyfunc.load_model`
runs it, so it imports only mlflow, pandas, numpy and TensorFlow, never the project. The
serving SavedModel (`<Model uri>/Format-Serving`) travels with it as the artifact
`saved_model`; its `serving_default` signature does the decoding, the backbone and the
caption loop, so `predict` only batches bytes into it.

Input: a DataFrame whose `image` column (or else its first column) holds the image bytes,
a list of bytes, or one bytes value. Output: a DataFrame with one row per image, in order,
and one column per output of the serving signature named by the param `signature`
(default `serving_default`: `caption`, and e.g. `log_probability`; `attention` gives the
words, their probabilities and attention weights). The logged signature is one unnamed
`binary` column, so MLflow's REST scoring server takes base64 strings:
`{"inputs": ["<base64 JPEG>", ...], "params": {"signature": "beam_search"}}`.
"""

from __future__ import annotations

from typing import Any

import mlflow
from mlflow.pyfunc import PythonModel

SAVED_MODEL_ARTIFACT = "saved_model"
IMAGE_COLUMN = "image"
BATCH_SIZE = 32
DEFAULT_SIGNATURE = "serving_default"


def _rows(values) -> list:
    """A batch-major output as one plain value per row: text decoded, arrays as nested lists."""
    return [_plain(value) for value in values]


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if hasattr(value, "ndim") and value.ndim > 0:
        return [_plain(v) for v in value]
    return value.item() if hasattr(value, "item") else value


def _images(model_input: Any) -> list[bytes]:
    import pandas as pd

    if isinstance(model_input, pd.DataFrame):
        column = IMAGE_COLUMN if IMAGE_COLUMN in model_input.columns else model_input.columns[0]
        values = model_input[column].tolist()
    elif isinstance(model_input, (bytes, bytearray)):
        values = [model_input]
    elif isinstance(model_input, dict):
        values = list(model_input.get(IMAGE_COLUMN, next(iter(model_input.values()), [])))
    else:
        values = list(model_input)
    images = []
    for i, value in enumerate(values):
        if isinstance(value, (bytes, bytearray)):
            images.append(bytes(value))
        elif hasattr(value, "tobytes"):  # numpy bytes scalars
            images.append(value.tobytes())
        else:
            raise TypeError(f"image {i} is {type(value).__name__}, expected the encoded image bytes")
    return images


class CaptionModel(PythonModel):
    """Wraps the serving signature of the exported SavedModel."""

    # The input is checked against the explicit signature (one binary column, which also
    # takes a list or one bytes value), not against type hints; this MLflow switch stops
    # it from wrapping `predict` for hints and warning, at every load, that there are none.
    _skip_type_hint_validation = True

    def load_context(self, context) -> None:
        import tensorflow as tf

        self._model = tf.saved_model.load(context.artifacts[SAVED_MODEL_ARTIFACT])

    def predict(self, context, model_input, params=None):
        import pandas as pd
        import tensorflow as tf

        name = (params or {}).get("signature") or DEFAULT_SIGNATURE
        if name not in self._model.signatures:
            raise ValueError(f"the model has no signature {name!r}; it has {', '.join(sorted(self._model.signatures))}")
        signature = self._model.signatures[name]
        images = _images(model_input)
        columns: dict[str, list] = {}
        for start in range(0, len(images), BATCH_SIZE):
            batch = tf.constant(images[start : start + BATCH_SIZE], dtype=tf.string)
            for key, value in signature(images=batch).items():
                columns.setdefault(key, []).extend(_rows(value.numpy()))
        if not columns:
            columns = {key: [] for key in signature.structured_outputs}
        return pd.DataFrame({key: columns[key] for key in sorted(columns, key=lambda k: (k != "caption", k))})


mlflow.models.set_model(CaptionModel())

"""The captioner as an MLflow pyfunc model: JPEG/PNG bytes in, captions out.

MLflow loads this file itself ("models from code"): `mlflow.pyfunc.log_model` in
tracking/mlflow_logger.py copies it into the logged model, and `mlflow.pyfunc.load_model`
runs it, so it imports only mlflow, pandas, numpy and TensorFlow, never the project. The
serving SavedModel (`<Model uri>/Format-Serving`) travels with it as the artifact
`saved_model`; its `serving_default` signature does the decoding, the backbone and the
caption loop, so `predict` only batches bytes into it.

Input: a DataFrame whose `image` column (or else its first column) holds the image bytes,
a list of bytes, or one bytes value. Output: a DataFrame with one `caption` per image, in
order. The logged signature is one unnamed `binary` column, so MLflow's REST scoring server
takes base64 strings: `{"inputs": ["<base64 JPEG>", ...]}`.
"""

from __future__ import annotations

from typing import Any

import mlflow
from mlflow.pyfunc import PythonModel

SAVED_MODEL_ARTIFACT = "saved_model"
IMAGE_COLUMN = "image"
BATCH_SIZE = 32


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
        self._caption = self._model.signatures["serving_default"]

    def predict(self, context, model_input, params=None):
        import pandas as pd
        import tensorflow as tf

        images = _images(model_input)
        captions: list[str] = []
        for start in range(0, len(images), BATCH_SIZE):
            batch = tf.constant(images[start : start + BATCH_SIZE], dtype=tf.string)
            captions += [c.decode("utf-8") for c in self._caption(images=batch)["caption"].numpy()]
        return pd.DataFrame({"caption": captions})


mlflow.models.set_model(CaptionModel())

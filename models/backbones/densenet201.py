"""DenseNet201 (``keras.applications``) as a feature backbone.

ImageNet weights are Keras's no-top ``.h5`` file, which Keras downloads on
first use into its cache (``~/.keras/models``), or a local copy of it given
as ``weights_path`` (config: ``features.weights_path``).
"""

from __future__ import annotations

import os
import socket

import keras

from .registry import BackboneWeightsError

IMAGE_SIZE = 224
WEIGHTS_FILE = "densenet201_weights_tf_dim_ordering_tf_kernels_notop.h5"
WEIGHTS_URL = ("https://storage.googleapis.com/tensorflow/keras-applications/"
               f"densenet/{WEIGHTS_FILE}")
WEIGHTS_HASH = "c13680b51ded0fb44dff2d8f86ac8bb1"
DOWNLOAD_SOCKET_TIMEOUT = 30.0  # seconds per socket operation, so no hang
CACHE_DIR: str | None = None  # None: Keras's own cache ($KERAS_HOME or ~/.keras)

_HOW_TO_FIX = (
    "DenseNet201 needs its ImageNet weights. Either give this machine internet "
    "access so Keras can download them on first use, or set features.weights_path "
    f"to a local DenseNet201 no-top .h5 file ({WEIGHTS_FILE})."
)

# keras.applications.densenet.preprocess_input ("torch" mode), as layers.
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


def _imagenet_weights_file() -> str:
    """Return Keras's cached no-top weights, downloading them if needed."""
    previous = socket.getdefaulttimeout()
    if previous is None:
        socket.setdefaulttimeout(DOWNLOAD_SOCKET_TIMEOUT)
    try:
        return keras.utils.get_file(WEIGHTS_FILE, WEIGHTS_URL, cache_dir=CACHE_DIR,
                                    cache_subdir="models", file_hash=WEIGHTS_HASH)
    except Exception as e:  # noqa: BLE001 -- urllib/HTTP/hash errors alike
        raise BackboneWeightsError(f"{_HOW_TO_FIX} (download failed: {e})") from e
    finally:
        if previous is None:
            socket.setdefaulttimeout(None)


def _weights_file(weights: str | None, weights_path: str | None) -> str | None:
    if weights_path:
        if not os.path.isfile(weights_path):
            raise BackboneWeightsError(f"{_HOW_TO_FIX} (no such file: {weights_path})")
        return weights_path
    return _imagenet_weights_file() if weights == "imagenet" else None


def build_feature_model(weights: str | None = "imagenet", weights_path: str | None = None) -> keras.Model:
    """Raw 0..255 RGB -> {"pooled": (None, 1920), "grid": (None, 7, 7, 1920)}."""
    path = _weights_file(weights, weights_path)  # fail before building anything
    inputs = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3), dtype="float32", name="image")
    x = keras.layers.Rescaling(1.0 / 255.0, name="scale")(inputs)
    x = keras.layers.Normalization(mean=_MEAN, variance=[s * s for s in _STD],
                                   name="imagenet_norm")(x)
    base = keras.applications.DenseNet201(include_top=False, weights=None,
                                          input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3))
    if path:
        try:
            base.load_weights(path)
        except Exception as e:  # noqa: BLE001
            raise BackboneWeightsError(f"{_HOW_TO_FIX} (cannot load {path}: {e})") from e
    grid = base(x)
    pooled = keras.layers.GlobalAveragePooling2D(name="avg_pool")(grid)
    return keras.Model(inputs, {"pooled": pooled, "grid": grid}, name="densenet201_features")

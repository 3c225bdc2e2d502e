"""The backbone's feature model, built once per process and shared by every DoFn.

Used by extract.py's `ExtractFeatures` (one model for all splits in a worker, through
Beam's `shared.Shared`) and by bench/features.py. Images go through
`models.images.decode_images`, the ops the serving signature runs, so the features a
caption model trains on are the features it sees when served.
"""

from __future__ import annotations

import atexit
import dataclasses
import logging
import time
import weakref

import keras
import numpy as np
import tensorflow as tf
from apache_beam.utils import shared

from models.backbones import get_backbone
from models.images import decode_images

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class BackboneArgs:
    """Which backbone and weights to build (see models.backbones.get_backbone)."""

    name: str
    weights: str | None = "imagenet"
    weights_path: str | None = None
    # > 0: also output "map", the map entering this block (features.finetune_from_block).
    map_from_block: int = 0


class FeatureModel:
    """A backbone's feature model and its decode+forward function, traced once.

    Built once per process (see `load_feature_model`): DoFn instances of every split share it.
    """

    def __init__(self, args: BackboneArgs):
        started = time.perf_counter()
        self.backbone = get_backbone(args.name, args.weights, args.weights_path)
        if args.map_from_block:
            feature_model, bottom, _ = self.backbone.build_split_models(args.map_from_block)
            self.model = keras.Model(feature_model.inputs, {**feature_model.output, "map": bottom.output})
        else:
            self.model = self.backbone.build_feature_model()
        model, size = self.model, self.backbone.image_size
        with_map = ("map",) if args.map_from_block else ()

        # A fixed signature: one trace serves every batch, the last short one included.
        # Two functions, so the grid is only materialised when it is stored.
        def traced(keys: tuple[str, ...]):
            @tf.function(
                input_signature=[tf.TensorSpec([None], tf.string)], jit_compile=False, reduce_retracing=True
            )
            def extract(encoded: tf.Tensor) -> dict[str, tf.Tensor]:
                out = model(decode_images(encoded, size), training=False)
                return {k: out[k] for k in keys}

            return extract

        self._extract = {False: traced(("pooled", *with_map)), True: traced(("pooled", "grid", *with_map))}
        # Trace and run both once now, so the first real batch pays no graph set-up.
        warm = tf.expand_dims(tf.io.encode_png(tf.zeros([8, 8, 3], tf.uint8)), 0)
        for fn in self._extract.values():
            fn(warm)
        self.build_seconds = time.perf_counter() - started
        _BUILT.add(self)
        weights = args.weights_path or args.weights
        log.info("built backbone %s (weights %s) in %.1f s", args.name, weights, self.build_seconds)

    def __call__(self, encoded: list[bytes], with_grid: bool) -> dict[str, np.ndarray]:
        """Encoded images -> {"pooled": [N, D]} (and "grid": [N, h, w, c] if with_grid, and "map":
        [N, h', w', c'] if the args name a block)."""
        out = self._extract[with_grid](tf.constant(encoded, dtype=tf.string))
        return {k: v.numpy() for k, v in out.items()}


# One handle for the module: every ExtractFeatures in a process gets the same model.
_MODELS = shared.Shared()
_BUILT: weakref.WeakSet[FeatureModel] = weakref.WeakSet()


@atexit.register
def _release_models() -> None:
    """Free traced functions before interpreter teardown, which Beam's cache would outlive
    (TF then prints a TypeError from AtomicFunction.__del__ at exit)."""
    for model in list(_BUILT):
        model._extract = {}


def load_feature_model(args: BackboneArgs) -> FeatureModel:
    """The process's FeatureModel for `args`, built on first use and then reused."""
    return _MODELS.acquire(lambda: FeatureModel(args), tag=args)

"""Exports the serving SavedModel: encoded images in, captions out, all in one graph.

Called by models/trainer.py at the end of training. Signatures (inputs `images`,
tf.string [None], JPEG/PNG/GIF/BMP bytes, already base64-decoded by TF Serving; an image
whose header claims more than max_image_pixels fails with InvalidArgument before decoding):
  - `greedy`: {caption [N], log_probability [N]} (sum of the chosen tokens' log-probabilities)
  - `beam_search` (when decode.beam_width > 1): {caption [N], alternatives [N, K],
    scores [N, K]}, best first, scores = log-probability / length**length_penalty
  - `serving_default`: the one named by decode.default (greedy unless configured).
  - `attention` (attention decoders only): the default decoder's caption [N] with, per token
    position T, `words` [N, T] ("" at <end> and after), `word_probabilities` [N, T] and
    `attention` [N, T, h*w], the weights over the grid cells (row-major) that each word was
    predicted with; `grid_size` [N, 2] = (h, w). The web page draws them as a heat map.
Both decoders block repeated n-grams when decode.no_repeat_ngram_size is set.
Decoding, resizing, the backbone, the decoding loop and detokenization
(`StringLookup(invert=True)`) are stock TensorFlow ops, so TF Serving loads it as it is.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import keras
import tensorflow as tf

from models import text
from models.decoding import beam_search_decode, greedy_decode, replay_attention
from models.images import DEFAULT_MAX_PIXELS, decode_images

IMAGES_SPEC = tf.TensorSpec([None], tf.string, name="images")


@dataclasses.dataclass(frozen=True)
class DecodeSettings:
    max_length: int
    beam_width: int
    length_penalty: float
    default: str  # "greedy" or "beam_search"
    no_repeat_ngram_size: int = 0  # n > 0: no caption completes an n-gram it already has


class CaptionPipeline:
    """Image bytes -> features -> token ids -> text, for a batch; its parts are exported."""

    def __init__(
        self,
        feature_model: keras.Model,
        captioner: keras.Model,
        vocabulary: list[str],
        image_size: int,
        settings: DecodeSettings,
        max_image_pixels: int = DEFAULT_MAX_PIXELS,
    ):
        self.feature_model = feature_model
        self.max_image_pixels = max_image_pixels
        self.captioner = captioner
        self.image_size = image_size
        self.settings = settings
        self.ids = {
            "start_id": vocabulary.index(text.START),
            "end_id": vocabulary.index(text.END),
            "pad_id": 0,
        }
        # `vocabulary` is indexed by token id: id 0 is padding (the mask token here).
        self.to_words = keras.layers.StringLookup(
            vocabulary=vocabulary[1:], mask_token=vocabulary[0], num_oov_indices=0, invert=True, name="to_words"
        )

    def features(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        """The image inputs the captioner reads, as the trainer fed them."""
        return self._captioner_inputs(self._backbone(images))

    def _backbone(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        return self.feature_model(decode_images(images, self.image_size, self.max_image_pixels))

    def _captioner_inputs(self, backbone_outputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        return {name: image_input(backbone_outputs, name) for name in self.captioner.image_inputs}

    def greedy(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        ids, log_probability = self._greedy_ids(self.features(images))
        return {"caption": self.to_text(ids), "log_probability": log_probability}

    def beam_search(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        ids, scores = self._beam_ids(self.features(images))
        alternatives = self.to_text(ids)
        return {"caption": alternatives[:, 0], "alternatives": alternatives, "scores": scores}

    def attention(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        """The default decoder's caption, word by word, with the attention weights over the
        grid each word was predicted with (row-major cells of grid_size) and its probability."""
        backbone_outputs = self._backbone(images)
        features = self._captioner_inputs(backbone_outputs)
        if self.settings.default == "beam_search":
            ids = self._beam_ids(features)[0][:, 0]
        else:
            ids = self._greedy_ids(features)[0]
        weights, probabilities = replay_attention(self.captioner, features, ids, self.ids["start_id"], self.ids["pad_id"])
        batch = tf.shape(ids)[0]
        return {
            "caption": self.to_text(ids),
            "words": tf.where(self._is_word(ids), self.to_words(ids), ""),
            "word_probabilities": probabilities,
            "attention": weights,
            "grid_size": tf.tile(tf.shape(backbone_outputs["grid"])[None, 1:3], [batch, 1]),
        }

    def _greedy_ids(self, features: dict[str, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
        return greedy_decode(
            self.captioner,
            features,
            max_length=self.settings.max_length,
            no_repeat_ngram_size=self.settings.no_repeat_ngram_size,
            **self.ids,
        )

    def _beam_ids(self, features: dict[str, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
        return beam_search_decode(
            self.captioner,
            features,
            max_length=self.settings.max_length,
            beam_width=self.settings.beam_width,
            length_penalty=self.settings.length_penalty,
            no_repeat_ngram_size=self.settings.no_repeat_ngram_size,
            **self.ids,
        )

    def _is_word(self, ids: tf.Tensor) -> tf.Tensor:
        return (ids != self.ids["pad_id"]) & (ids != self.ids["end_id"]) & (ids != self.ids["start_id"])

    def to_text(self, ids: tf.Tensor) -> tf.Tensor:
        """Ids [..., T] -> strings [...]: words up to <end>, without <start>/<end>/pad."""
        words = tf.where(self._is_word(ids), self.to_words(ids), "")
        joined = tf.strings.reduce_join(words, axis=-1, separator=" ")
        return tf.strings.strip(tf.strings.regex_replace(joined, " +", " "))


def image_input(feature_outputs: dict[str, tf.Tensor], name: str) -> tf.Tensor:
    """A backbone output as a captioner input: pooled [B, D], or the grid as [B, h*w, c]."""
    if name == "image_features":
        return feature_outputs["pooled"]
    if name == "image_grid":
        grid = feature_outputs["grid"]
        return tf.reshape(grid, [tf.shape(grid)[0], -1, grid.shape[-1]])
    raise ValueError(f"unknown image input {name!r}")


def export_serving_model(
    feature_model: keras.Model,
    captioner: keras.Model,
    vocabulary: list[str],
    image_size: int,
    settings: DecodeSettings,
    export_dir: str | Path,
    max_image_pixels: int = DEFAULT_MAX_PIXELS,
) -> None:
    """Write the SavedModel with the signatures described in the module docstring."""
    pipeline = CaptionPipeline(feature_model, captioner, vocabulary, image_size, settings, max_image_pixels)
    archive = keras.export.ExportArchive()
    for part in (pipeline.feature_model, pipeline.captioner):
        archive.track(part)
    archive.track(pipeline.to_words.lookup_table)  # a TF resource, not a variable
    endpoints = {"greedy": pipeline.greedy}
    if settings.beam_width > 1:
        endpoints["beam_search"] = pipeline.beam_search
    if settings.default not in endpoints:
        raise ValueError(f"decode.default is {settings.default!r} but the export has {sorted(endpoints)}")
    endpoints["serving_default"] = endpoints[settings.default]
    if hasattr(captioner, "step_with_attention"):
        endpoints["attention"] = pipeline.attention
    for name, fn in endpoints.items():
        # An explicit tf.function: AutoGraph turns the decoding loops into tf.while_loop.
        archive.add_endpoint(name=name, fn=tf.function(fn, input_signature=[IMAGES_SPEC], autograph=True))
    archive.write_out(str(export_dir), verbose=False)

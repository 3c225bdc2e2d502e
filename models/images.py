"""Image bytes -> the backbone's input, in TensorFlow ops only.

Shared by the feature step (components/feature_extractor) and the serving signature
(models/export.py), so training features and served captions see identical pixels.
The image is squashed to a square, as the Flickr8k notebooks do, not cropped.
"""

from __future__ import annotations

import tensorflow as tf

from models.image_header import within_budget

# Larger images are refused before decoding (configs' serving.max_image_pixels has the same
# default): any real photo passes, a decompression bomb does not.
DEFAULT_MAX_PIXELS = 40_000_000


def decode_image(encoded: tf.Tensor, image_size: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> tf.Tensor:
    """One encoded JPEG/PNG/GIF/BMP (scalar tf.string) -> float32 [size, size, 3] in 0..255.

    Grayscale is expanded to RGB and alpha dropped; a GIF gives its first frame. Empty or
    non-image bytes, and images whose header claims over max_pixels, raise
    InvalidArgumentError with a message that says what was wrong.
    """
    not_empty = tf.debugging.assert_greater(
        tf.strings.length(encoded), 0, message="image bytes are empty"
    )
    # Without the explicit dependency, graph mode may run the decoder first and report
    # TF's vaguer "Input is empty." instead.
    with tf.control_dependencies([not_empty] if not_empty is not None else []):
        encoded = within_budget(encoded, max_pixels)
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    image = tf.image.resize(tf.cast(image, tf.float32), [image_size, image_size], antialias=True)
    image.set_shape([image_size, image_size, 3])
    return image


def decode_images(encoded: tf.Tensor, image_size: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> tf.Tensor:
    """A batch of encoded images (tf.string [N]) -> float32 [N, size, size, 3]."""
    return tf.map_fn(
        lambda x: decode_image(x, image_size, max_pixels),
        encoded,
        fn_output_signature=tf.TensorSpec([image_size, image_size, 3], tf.float32),
    )

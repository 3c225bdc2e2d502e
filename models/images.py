"""Image bytes -> the backbone's input, in TensorFlow ops only.

Shared by the feature step (components/feature_extractor) and the serving signature
(models/export.py), so training features and served captions see identical pixels.
The image is squashed to a square, as the Flickr8k notebooks do, not cropped.
"""

from __future__ import annotations

import tensorflow as tf


def decode_image(encoded: tf.Tensor, image_size: int) -> tf.Tensor:
    """One encoded JPEG/PNG/GIF/BMP (scalar tf.string) -> float32 [size, size, 3] in 0..255.

    Grayscale is expanded to RGB and alpha dropped. Empty or non-image bytes raise
    InvalidArgumentError with a message that says what was wrong.
    """
    not_empty = tf.debugging.assert_greater(
        tf.strings.length(encoded), 0, message="image bytes are empty"
    )
    # Without the explicit dependency, graph mode may run the decoder first and report
    # TF's vaguer "Input is empty." instead.
    with tf.control_dependencies([not_empty] if not_empty is not None else []):
        encoded = tf.identity(encoded)
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    image = tf.image.resize(tf.cast(image, tf.float32), [image_size, image_size], antialias=True)
    image.set_shape([image_size, image_size, 3])
    return image


def decode_images(encoded: tf.Tensor, image_size: int) -> tf.Tensor:
    """A batch of encoded images (tf.string [N]) -> float32 [N, size, size, 3]."""
    return tf.map_fn(
        lambda x: decode_image(x, image_size),
        encoded,
        fn_output_signature=tf.TensorSpec([image_size, image_size, 3], tf.float32),
    )

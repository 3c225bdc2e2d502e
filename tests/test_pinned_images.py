"""decode_image on images of known pixels: RGB order, grayscale, alpha, and the square squash.

Expected values are written by hand from the pixels drawn, not through the decoder.
"""

from __future__ import annotations

import io

import numpy as np
import tensorflow as tf
from PIL import Image

from models.images import decode_image, decode_images

RED, BLUE = (255, 0, 0), (0, 0, 255)


def png(image: Image.Image) -> tf.Tensor:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return tf.constant(buffer.getvalue())


def test_solid_red_stays_red_in_rgb_order():
    out = decode_image(png(Image.new("RGB", (6, 6), RED)), 4).numpy()
    assert out.shape == (4, 4, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out, np.broadcast_to([255.0, 0.0, 0.0], (4, 4, 3)), atol=1e-3)


def test_grayscale_becomes_three_equal_channels():
    out = decode_image(png(Image.new("L", (5, 5), 100)), 3).numpy()
    np.testing.assert_allclose(out, np.full((3, 3, 3), 100.0), atol=1e-3)


def test_alpha_is_dropped_not_blended():
    out = decode_image(png(Image.new("RGBA", (4, 4), (0, 0, 255, 64))), 2).numpy()
    np.testing.assert_allclose(out, np.broadcast_to([0.0, 0.0, 255.0], (2, 2, 3)), atol=1e-3)


def test_a_2_to_1_image_is_squashed_not_cropped():
    # 16x8: left 8 columns red, right 8 blue -> 4x4. Each output column averages a
    # triangle of 8 input columns (antialiased 4x downscale): the outer columns are pure,
    # the inner ones hold 2/16 of the other colour (weights 0.5+1.5 of 16).
    image = Image.new("RGB", (16, 8), RED)
    image.paste(Image.new("RGB", (8, 8), BLUE), (8, 0))
    out = decode_image(png(image), 4).numpy()
    red_share = np.array([1.0, 14 / 16, 2 / 16, 0.0])
    expected_row = np.stack([255 * red_share, np.zeros(4), 255 * (1 - red_share)], axis=-1)
    np.testing.assert_allclose(out, np.broadcast_to(expected_row, (4, 4, 3)), atol=0.5)


def test_a_batch_keeps_each_image_its_own_pixels():
    batch = tf.stack([png(Image.new("RGB", (3, 3), RED)), png(Image.new("RGB", (8, 2), BLUE))])
    out = decode_images(batch, 2).numpy()
    np.testing.assert_allclose(out[0], np.broadcast_to([255.0, 0.0, 0.0], (2, 2, 3)), atol=1e-3)
    np.testing.assert_allclose(out[1], np.broadcast_to([0.0, 0.0, 255.0], (2, 2, 3)), atol=1e-3)


def test_empty_bytes_are_refused_as_empty_in_a_graph_and_eagerly():
    import pytest

    graph = tf.function(lambda x: decode_images(x, 8), input_signature=[tf.TensorSpec([None], tf.string)])
    with pytest.raises(tf.errors.InvalidArgumentError, match="image bytes are empty"):
        graph(tf.constant([b""]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="image bytes are empty"):
        decode_image(tf.constant(b""), 8)


def test_one_byte_is_not_called_empty():
    import pytest

    with pytest.raises(tf.errors.InvalidArgumentError) as error:
        decode_image(tf.constant(b"\xff"), 8)
    assert "empty" not in str(error.value)

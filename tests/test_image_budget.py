"""The pixel budget of models/images.py: sizes read from headers, bombs refused before decoding.

Real encoded images (PIL) and hand-made hostile ones (tests/images.py), through the very
tf.function the serving signature and the feature step build.
"""

from __future__ import annotations

import io
import resource
import time

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from models import image_header
from models.images import DEFAULT_MAX_PIXELS, decode_image
from tests.images import animated_gif, encode, grayscale_png, jpeg_claiming, png_bomb, rgba_png, solid_rgb

STRING = tf.TensorSpec([], tf.string)
decode16 = tf.function(lambda data: decode_image(data, 16), input_signature=[STRING])
size_and_bytes = tf.function(image_header.size_and_bytes, input_signature=[STRING])


def header_size(data: bytes) -> tuple[int, int]:
    return tuple(size_and_bytes(tf.constant(data))[0].numpy().tolist())


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.parametrize(
    "data,size",
    [
        (solid_rgb(40, 60), (40, 60)),
        (grayscale_png(30, 20), (30, 20)),
        (rgba_png(50, 70), (50, 70)),
        (solid_rgb(33, 17, fmt="BMP"), (33, 17)),
        (encode(np.zeros((9, 13, 3), np.uint8), "GIF"), (9, 13)),
        (b"not an image", (0, 0)),
    ],
    ids=["jpeg", "png", "png-rgba", "bmp", "gif", "not-an-image"],
)
def test_header_size_matches_the_decoded_size(data, size):
    assert header_size(data) == size
    if size != (0, 0):
        assert tuple(tf.io.decode_image(data, expand_animations=False).shape[:2]) == size


def test_good_images_decode_as_before():
    for data in (solid_rgb(40, 60), grayscale_png(30, 20), solid_rgb(20, 30, fmt="BMP")):
        expected = tf.image.resize(
            tf.cast(tf.io.decode_image(data, channels=3, expand_animations=False), tf.float32), [16, 16], antialias=True
        )
        np.testing.assert_array_equal(decode16(tf.constant(data)).numpy(), expected.numpy())


def test_png_bomb_is_refused_fast_without_decoding():
    bomb = png_bomb(23_000, 23_000)  # ~64 KB; 1.6 GB as decoded RGB
    assert len(bomb) < 100_000
    decode16(tf.constant(solid_rgb(8, 8)))  # traced and warm
    before = peak_rss_mb()
    started = time.perf_counter()
    with pytest.raises(tf.errors.InvalidArgumentError, match="23000x23000 pixels .* over the limit of 40000000 pixels"):
        decode16(tf.constant(bomb))
    assert time.perf_counter() - started < 1.0
    assert peak_rss_mb() - before < 200  # the decoder never allocated the image


def test_jpeg_whose_frame_header_lies_is_refused():
    liar = jpeg_claiming(13_000, 13_000, real=224)
    assert header_size(liar) == (13_000, 13_000)
    with pytest.raises(tf.errors.InvalidArgumentError, match="13000x13000 pixels"):
        decode16(tf.constant(liar))


def test_the_limit_is_a_parameter_and_its_default_matches_the_config():
    from configs.config import ServingConfig

    assert DEFAULT_MAX_PIXELS == ServingConfig().max_image_pixels
    small = tf.function(lambda data: decode_image(data, 16, max_pixels=100), input_signature=[STRING])
    assert small(tf.constant(solid_rgb(10, 10))).shape == (16, 16, 3)
    with pytest.raises(tf.errors.InvalidArgumentError, match="11x10 pixels"):
        small(tf.constant(solid_rgb(10, 11)))


def test_many_frame_gif_is_cut_to_its_first_frame_before_decoding():
    gif = animated_gif(frames=300, size=100)
    size, first = size_and_bytes(tf.constant(gif))
    assert tuple(size.numpy()) == (100, 100)
    first = first.numpy()
    assert len(first) < len(gif) / 100  # one frame of 300 kept
    expected = tf.io.decode_image(gif, channels=3, expand_animations=False).numpy()
    np.testing.assert_array_equal(tf.io.decode_image(first, channels=3, expand_animations=False).numpy(), expected)
    started = time.perf_counter()
    decode16(tf.constant(gif))
    assert time.perf_counter() - started < 1.0


def test_gif_frame_larger_than_its_screen_counts():
    """A first frame that claims more than the logical screen is what the decoder allocates."""
    gif = bytearray(encode(np.zeros((4, 4, 3), np.uint8), "GIF"))
    descriptor = gif.index(b"\x2c", 13)
    gif[descriptor + 5 : descriptor + 9] = (60_000).to_bytes(2, "little") + (60_000).to_bytes(2, "little")
    assert header_size(bytes(gif)) == (60_000, 60_000)
    with pytest.raises(tf.errors.InvalidArgumentError, match="over the limit"):
        decode16(tf.constant(bytes(gif)))


@pytest.mark.parametrize("data", [b"\x89PNG\r\n\x1a\n", b"GIF89a", b"BM", b"\xff\xd8\xff"], ids=["png", "gif", "bmp", "jpeg"])
def test_truncated_headers_are_invalid_argument_not_a_crash(data):
    with pytest.raises(tf.errors.InvalidArgumentError):
        decode16(tf.constant(data))


def test_single_frame_gif_decodes_like_pil():
    array = np.random.default_rng(1).integers(0, 255, (12, 10), np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array, "L").save(buffer, "GIF")
    _, first = size_and_bytes(tf.constant(buffer.getvalue()))
    decoded = tf.io.decode_image(first.numpy(), channels=3, expand_animations=False).numpy()
    assert decoded.shape == (12, 10, 3)


def test_gif_walk_stays_cheap_whatever_the_sub_blocks():
    """Full 255-byte sub-blocks are skipped in one vector step (a 10 MB frame in well under a
    second); a frame of many short sub-blocks is refused instead of walked byte by byte."""
    gif = bytearray(encode(np.zeros((4, 4, 3), np.uint8), "GIF"))
    descriptor = gif.index(b"\x2c", 13)
    assert gif[descriptor + 9] & 0x80 == 0  # no local colour table
    head = bytes(gif[: descriptor + 10]) + b"\x02"
    frame = head + (b"\xff" + bytes(255)) * 20_000 + b"\x03abc\x00"
    second = frame[descriptor:]
    size_and_bytes(tf.constant(bytes(gif)))  # traced
    started = time.perf_counter()
    _, first = size_and_bytes(tf.constant(frame + second[:1000] + b"\x3b"))
    assert time.perf_counter() - started < 1.0
    assert first.numpy() == frame + b"\x3b"
    short_blocks = head + b"\x01\x00" * 100_000 + b"\x00\x3b"
    started = time.perf_counter()
    with pytest.raises(tf.errors.InvalidArgumentError, match="re-encode it"):
        size_and_bytes(tf.constant(short_blocks))
    assert time.perf_counter() - started < 1.0

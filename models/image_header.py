"""An encoded image's pixel count from its header, before any decode, in stock TF ops only.

Called by models/images.py, so the serving graph and the feature step refuse a
decompression bomb (a few KB that claim tens of thousands of pixels a side) before the
decoder allocates it. Formats are told apart as tf.io.decode_image does (JPEG, PNG, GIF,
BMP); the sizes come from the JPEG frame header (tf.image.extract_jpeg_shape), the PNG
IHDR chunk, the GIF screen and first image descriptor, and the BMP info header. GIF
bytes are also cut after their first frame (see _gif), because TF's GIF
decoder reads every frame before it returns the first.
"""

from __future__ import annotations

import tensorflow as tf

JPEG, PNG, GIF, BMP, OTHER = 0, 1, 2, 3, 4
_HEAD = 32  # bytes read for the fixed-position header fields
# Loop steps to find a GIF's first frame: one per block and per sub-block shorter than 255
# bytes. Real files need a handful (a few extensions, the frame's last sub-block).
MAX_GIF_STEPS = 256


def image_format(encoded: tf.Tensor) -> tf.Tensor:
    """JPEG/PNG/GIF/BMP/OTHER (int32 scalar), from the leading magic bytes as TF's decoder does."""
    head = tf.strings.substr(encoded, 0, 8)
    checks = [
        (tf.strings.substr(head, 0, 3) == b"\xff\xd8\xff", JPEG),
        (head == b"\x89PNG\r\n\x1a\n", PNG),
        (tf.strings.substr(head, 0, 4) == b"GIF8", GIF),
        (tf.strings.substr(head, 0, 2) == b"BM", BMP),
    ]
    kind = tf.constant(OTHER)
    for matches, value in reversed(checks):
        kind = tf.where(matches, value, kind)
    return kind


def _bytes(encoded: tf.Tensor, length: int) -> tf.Tensor:
    """The first `length` bytes as int64 [length], zero-padded when the data is shorter."""
    head = tf.strings.substr(encoded, 0, length) + tf.constant(b"\0" * length)
    return tf.cast(tf.io.decode_raw(tf.strings.substr(head, 0, length), tf.uint8), tf.int64)


def _number(raw: tf.Tensor, offset: int, size: int, big_endian: bool) -> tf.Tensor:
    """An unsigned integer of `size` bytes at `offset` of an int64 byte vector."""
    value = tf.constant(0, tf.int64)
    order = range(size) if big_endian else reversed(range(size))
    for i in order:
        value = value * 256 + raw[offset + i]
    return value


def _signed32(value: tf.Tensor) -> tf.Tensor:
    return tf.where(value >= 2**31, value - 2**32, value)


def _jpeg_size(encoded: tf.Tensor) -> tf.Tensor:
    shape = tf.cast(tf.image.extract_jpeg_shape(encoded), tf.int64)
    return tf.stack([shape[0], shape[1]])


def _png_size(encoded: tf.Tensor) -> tf.Tensor:
    raw = _bytes(encoded, _HEAD)
    return tf.stack([_number(raw, 20, 4, True), _number(raw, 16, 4, True)])


def _bmp_size(encoded: tf.Tensor) -> tf.Tensor:
    raw = _bytes(encoded, _HEAD)
    width = tf.abs(_signed32(_number(raw, 18, 4, False)))
    height = tf.abs(_signed32(_number(raw, 22, 4, False)))  # negative: rows stored top-down
    return tf.stack([height, width])


def _walk_gif(encoded: tf.Tensor):
    """(end of the first frame's data or -1, its height, its width) by walking GIF blocks.

    A block's data is a chain of sub-blocks (a size byte, then that many bytes) ended by a
    size of 0. Encoders write full 255-byte sub-blocks, so a run of them is skipped in one
    vector step (every 256th byte is 255 up to the run's end); any other sub-block is one
    loop step, and a file that needs more than MAX_GIF_STEPS of them is refused, which keeps
    the walk cheap whatever the bytes.
    """
    data = tf.io.decode_raw(encoded, tf.uint8)  # bytes stay bytes: only scalars are widened
    n = tf.size(data, out_type=tf.int64)

    def i64(value):
        return tf.constant(value, tf.int64)

    def byte(i):  # 0 past the end
        i = tf.cast(i, tf.int64)
        value = tf.cast(tf.gather(data, tf.clip_by_value(i, 0, tf.maximum(n - 1, 0))), tf.int64)
        return tf.where(i < n, value, i64(0))

    def skip_full_run(pos):  # pos holds 255: the first position after the run of 255-byte sub-blocks
        sizes = tf.strided_slice(data, [pos], [n], [256])
        other = tf.not_equal(sizes, tf.constant(255, tf.uint8))
        run = tf.where(tf.reduce_any(other), tf.argmax(other, output_type=tf.int64), tf.size(sizes, out_type=tf.int64))
        return pos + 256 * run

    def table(flags):  # bytes of the colour table a flags byte announces
        return tf.where(flags >= 128, 3 * tf.bitwise.left_shift(i64(2), flags % 8), i64(0))

    # State: position; mode (0: at a block's first byte, 1: in an extension's sub-blocks,
    # 2: in the first frame's sub-blocks); end (-1: going on, -2: stopped without a first
    # frame, else where the first frame's data ends); the first frame's height and width.
    def step(pos, mode, end, height, width):
        b = byte(pos)
        at_block = tf.equal(mode, 0)
        is_ext, is_img = at_block & tf.equal(b, 0x21), at_block & tf.equal(b, 0x2C)
        image_data = pos + 10 + table(byte(pos + 9)) + 1  # descriptor, local table, LZW code size
        in_chain = ~at_block
        chain_next = tf.cond(in_chain & tf.equal(b, 255), lambda: skip_full_run(pos), lambda: pos + b + 1)
        chain_over = in_chain & tf.equal(b, 0)
        next_pos = tf.where(is_ext, pos + 2, tf.where(is_img, image_data, tf.where(chain_over, pos + 1, chain_next)))
        next_mode = tf.where(is_ext, i64(1), tf.where(is_img, i64(2), tf.where(chain_over, i64(0), mode)))
        next_end = tf.where(
            chain_over & tf.equal(mode, 2), pos + 1, tf.where(at_block & ~is_ext & ~is_img, i64(-2), i64(-1))
        )
        return (
            next_pos,
            next_mode,
            next_end,
            tf.where(is_img, byte(pos + 7) + 256 * byte(pos + 8), height),
            tf.where(is_img, byte(pos + 5) + 256 * byte(pos + 6), width),
        )

    zero = i64(0)
    pos, _, end, height, width = tf.while_loop(
        lambda pos, mode, end, h, w: tf.equal(end, -1) & (pos < n),
        step,
        (13 + table(byte(10)), zero, i64(-1), zero, zero),
        maximum_iterations=MAX_GIF_STEPS,
    )
    walked = tf.debugging.Assert(
        ~tf.equal(end, -1) | (pos >= n),
        [f"GIF needs over {MAX_GIF_STEPS} steps to find its first frame's end (blocks shorter than 255 bytes); re-encode it"],
    )
    with tf.control_dependencies([walked]):
        return tf.where(end >= 0, end, i64(-1)), height, width


def _gif(encoded: tf.Tensor):
    """Size: the larger of the logical screen and the first frame, side by side (both get
    allocated). Bytes: cut after the first frame's data, plus the trailer byte."""
    raw = _bytes(encoded, _HEAD)
    end, frame_height, frame_width = _walk_gif(encoded)
    height = tf.maximum(_number(raw, 8, 2, False), frame_height)
    width = tf.maximum(_number(raw, 6, 2, False), frame_width)
    first = tf.where(end >= 0, tf.strings.substr(encoded, tf.constant(0, tf.int64), tf.maximum(end, 0)) + b"\x3b", encoded)
    return tf.stack([height, width]), first


def size_and_bytes(encoded: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """([height, width] int64 the image claims, the bytes to decode). Bytes of no known
    format give [0, 0] and are passed on (the decoder then says what is wrong); a malformed
    JPEG header raises InvalidArgumentError."""
    branches = [
        lambda: (_jpeg_size(encoded), encoded),
        lambda: (_png_size(encoded), encoded),
        lambda: _gif(encoded),
        lambda: (_bmp_size(encoded), encoded),
        lambda: (tf.zeros([2], tf.int64), encoded),
    ]
    return tf.switch_case(image_format(encoded), branches)


def within_budget(encoded: tf.Tensor, max_pixels: int) -> tf.Tensor:
    """The bytes to decode, once the header claims at most max_pixels (else InvalidArgumentError).

    The pixel count is checked before the decoder runs; GIFs come back cut to their first frame.
    """
    size, data = size_and_bytes(encoded)
    message = tf.strings.format(
        "image of {}x{} pixels (width x height) is over the limit of {} pixels",
        (size[1], size[0], tf.constant(max_pixels, tf.int64)),
    )
    within = tf.debugging.Assert(size[0] * size[1] <= max_pixels, [message])
    with tf.control_dependencies([within]):
        return tf.identity(data)

"""Encoded test images of odd kinds, made on the fly (nothing binary is committed)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def encode(array: np.ndarray, fmt: str = "JPEG", mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, fmt)
    return buffer.getvalue()


def solid_rgb(height: int, width: int, rgb=(200, 40, 40), fmt: str = "JPEG") -> bytes:
    return encode(np.full((height, width, 3), rgb, np.uint8), fmt)


def grayscale_png(height: int = 64, width: int = 48) -> bytes:
    return encode(np.tile(np.arange(width, dtype=np.uint8), (height, 1)), "PNG")


def rgba_png(height: int = 50, width: int = 70) -> bytes:
    array = np.zeros((height, width, 4), np.uint8)
    array[..., 2] = 220
    array[..., 3] = 128
    return encode(array, "PNG")


# ----------------------------------------------------------------------------------------------
# Hostile images: small in bytes, large once decoded


def png_bomb(width: int = 23_000, height: int = 23_000) -> bytes:
    """A real 1-bit grayscale PNG of width x height black pixels: a few tens of KB that decode
    to width*height*3 bytes (a decompression bomb)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\0" * (1 + (width + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def jpeg_claiming(width: int, height: int, real: int = 224) -> bytes:
    """A real-x-real JPEG whose frame header (SOF0) claims width x height."""
    data = bytearray(solid_rgb(real, real))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


def animated_gif(frames: int = 300, size: int = 200) -> bytes:
    """A GIF of `frames` different size x size frames (each frame differs, so none is dropped)."""
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (size, size), np.uint8), "L") for _ in range(frames)]
    buffer = io.BytesIO()
    images[0].save(buffer, "GIF", save_all=True, append_images=images[1:], duration=40, loop=0)
    return buffer.getvalue()


def pil_bytes(image: Image.Image, fmt: str) -> bytes:
    """A PIL image encoded in `fmt` (JPEG, PNG, GIF, ...)."""
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims a size in its header and has no pixel data (a bomb's shape)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")

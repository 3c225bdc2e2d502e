"""Encoded test images of odd kinds, made on the fly (nothing binary is committed)."""

from __future__ import annotations

import io

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

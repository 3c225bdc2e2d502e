"""Turns one image record into a tf.Example, or into the reason it must be skipped.

Called inside the Beam pipeline of `ingest.py`, once per image, so it stays a pure
function of the record: it reads the file, checks that it decodes completely (a truncated
JPEG is caught here, not at training time) and keeps the bytes exactly as they are.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, NamedTuple

from PIL import Image

from data import layout

if TYPE_CHECKING:  # imported in build_example: the image checks need no TF
    import tensorflow as tf

# Formats TF's decode_image reads in the serving graph; anything else is skipped.
ACCEPTED_FORMATS = ("JPEG", "PNG")


class Outcome(NamedTuple):
    """Either `example` (serialized tf.Example) or `skip_reason` is set."""

    image_id: str
    example: bytes | None = None
    skip_reason: str | None = None
    detail: str = ""


def inspect_image(data: bytes, max_pixels: int) -> tuple[int, int]:
    """(height, width) of a fully decodable image; raises ValueError saying what is wrong."""
    if not data:
        raise ValueError("empty file")
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if image.format not in ACCEPTED_FORMATS:
                raise ValueError(f"format {image.format} is not one of {ACCEPTED_FORMATS}")
            if width * height > max_pixels:
                raise OverflowError(f"{width}x{height} exceeds {max_pixels} pixels")
            image.load()  # decodes every scanline: raises on truncated or corrupt data
    except (OverflowError, ValueError):
        raise
    except Image.DecompressionBombError as e:
        # Pillow refuses huge images in open(), before the size check above can run.
        raise OverflowError(str(e)) from e
    except (OSError, SyntaxError) as e:
        raise ValueError(f"cannot decode: {e}") from e
    return height, width


def build_example(image_id: str, encoded: bytes, height: int, width: int, captions: tuple[str, ...]) -> tf.train.Example:
    """The pipeline's tf.Example: image_id, image/encoded (bytes as they are), size, captions."""
    import tensorflow as tf

    def _bytes(*values: bytes) -> tf.train.Feature:
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=list(values)))

    def _int(value: int) -> tf.train.Feature:
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))

    return tf.train.Example(
        features=tf.train.Features(
            feature={
                "image_id": _bytes(image_id.encode("utf-8")),
                "image/encoded": _bytes(encoded),
                "image/height": _int(height),
                "image/width": _int(width),
                "captions": _bytes(*(c.encode("utf-8") for c in captions)),
            }
        )
    )


def load_record(record: layout.ImageRecord, max_pixels: int) -> Outcome:
    """Read and check one image; never raises for bad data, so Beam keeps going."""
    try:
        with open(record.path, "rb") as f:
            encoded = f.read()
    except OSError as e:
        return Outcome(record.image_id, skip_reason=layout.IMAGE_CORRUPT, detail=f"unreadable: {e}")
    try:
        height, width = inspect_image(encoded, max_pixels)
    except OverflowError as e:
        return Outcome(record.image_id, skip_reason=layout.IMAGE_TOO_LARGE, detail=str(e))
    except ValueError as e:
        return Outcome(record.image_id, skip_reason=layout.IMAGE_CORRUPT, detail=str(e))
    example = build_example(record.image_id, encoded, height, width, record.captions)
    return Outcome(record.image_id, example=example.SerializeToString())

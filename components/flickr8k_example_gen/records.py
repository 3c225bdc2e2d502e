"""Turns one image record into a tf.Example, or into the reason it must be skipped.

Called inside the Beam pipeline of `ingest.py`, once per image, so it stays a pure
function of the record: it reads the file, checks that it decodes completely (a truncated
JPEG is caught here, not at training time) and keeps the bytes exactly as they are.
Only regular files are read: a FIFO or a device named `<id>.jpg` would block the read
(or never end), so it is skipped before anything waits on it.
"""

from __future__ import annotations

import io
import os
import stat
from typing import TYPE_CHECKING, NamedTuple

from PIL import Image

from data import layout
from models.contract import CAPTIONS_KEY, IMAGE_ENCODED_KEY, IMAGE_HEIGHT_KEY, IMAGE_ID_KEY, IMAGE_WIDTH_KEY

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


class NotRegularFile(OSError):
    """The path is a FIFO, device, socket or directory: no image, and reading a FIFO or a
    device can block or never end."""


def read_regular_file(path: str) -> bytes:
    """The bytes of `path` if it is a regular file (or a link to one); else NotRegularFile.

    The mode is checked with stat before opening (opening a FIFO for reading waits for a
    writer), and again on the open descriptor in case the path was swapped in between;
    O_NONBLOCK keeps that open from waiting.
    """
    _check_regular(os.stat(path).st_mode)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with open(fd, "rb") as f:
        _check_regular(os.fstat(fd).st_mode)
        return f.read()


_FILE_KINDS = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFDIR: "a directory",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


def _check_regular(mode: int) -> None:
    if not stat.S_ISREG(mode):
        kind = _FILE_KINDS.get(stat.S_IFMT(mode), f"file mode {mode:o}")
        raise NotRegularFile(f"not a regular file but {kind}")


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
                IMAGE_ID_KEY: _bytes(image_id.encode("utf-8")),
                IMAGE_ENCODED_KEY: _bytes(encoded),
                IMAGE_HEIGHT_KEY: _int(height),
                IMAGE_WIDTH_KEY: _int(width),
                CAPTIONS_KEY: _bytes(*(c.encode("utf-8") for c in captions)),
            }
        )
    )


def load_record(record: layout.ImageRecord, max_pixels: int) -> Outcome:
    """Read and check one image; never raises for bad data, so Beam keeps going."""
    try:
        encoded = read_regular_file(record.path)
    except NotRegularFile as e:
        return Outcome(record.image_id, skip_reason=layout.IMAGE_NOT_REGULAR_FILE, detail=str(e))
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

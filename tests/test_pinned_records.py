"""The per-image check of ingestion (records.py) at its limits, without TensorFlow.

Only the last test, the good path that builds a tf.Example, imports TF (lazily), so the
mutation run reaches it only for mutants the fast checks above did not catch.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from components.flickr8k_example_gen import records
from data import layout
from tests.images import pil_bytes, png_header_only




def record(path: Path, captions: tuple[str, ...] = ("A caption .",)) -> layout.ImageRecord:
    return layout.ImageRecord(path.stem, str(path), "train", captions)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_sizes_are_height_then_width(fmt):
    assert records.inspect_image(pil_bytes(Image.new("RGB", (7, 5), "red"), fmt), 10**6) == (5, 7)


def test_the_pixel_limit_allows_exactly_the_limit_and_refuses_one_more():
    png = pil_bytes(Image.new("RGB", (100, 80), "white"), "PNG")
    assert records.inspect_image(png, max_pixels=8000) == (80, 100)
    assert records.inspect_image(png, max_pixels=8001) == (80, 100)
    with pytest.raises(OverflowError, match=r"^100x80 exceeds 7999 pixels$"):
        records.inspect_image(png, max_pixels=7999)


def test_formats_other_than_jpeg_and_png_are_refused_by_name():
    with pytest.raises(ValueError, match=r"^format GIF is not one of \('JPEG', 'PNG'\)$"):
        records.inspect_image(pil_bytes(Image.new("RGB", (4, 4)), "GIF"), 10**6)


def test_empty_and_truncated_data_are_refused():
    with pytest.raises(ValueError, match="^empty file$"):
        records.inspect_image(b"", 10**6)
    png = pil_bytes(Image.new("RGB", (64, 48), "green"), "PNG")
    with pytest.raises(ValueError, match="^cannot decode: "):
        records.inspect_image(png[: len(png) // 2], 10**6)


def test_a_decompression_bomb_is_too_large():
    with pytest.raises(OverflowError):
        records.inspect_image(png_header_only(20_000, 20_000), 10**12)


def test_skips_say_why(tmp_path):
    good = tmp_path / "good.png"
    good.write_bytes(pil_bytes(Image.new("RGB", (30, 20), "black"), "PNG"))
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")

    too_large = records.load_record(record(good), max_pixels=599)
    assert too_large == records.Outcome("good", None, layout.IMAGE_TOO_LARGE, "30x20 exceeds 599 pixels")
    corrupt = records.load_record(record(bad), max_pixels=10**6)
    assert (corrupt.image_id, corrupt.example, corrupt.skip_reason) == ("bad", None, layout.IMAGE_CORRUPT)
    assert corrupt.detail.startswith("cannot decode: ")
    missing = records.load_record(record(tmp_path / "gone.jpg"), max_pixels=10**6)
    assert (missing.example, missing.skip_reason) == (None, layout.IMAGE_CORRUPT)
    assert missing.detail.startswith("unreadable: ")


def test_a_good_image_becomes_an_example_with_its_bytes_size_and_captions(tmp_path):
    import tensorflow as tf

    good = tmp_path / "good.png"
    data = pil_bytes(Image.new("RGB", (30, 20), "black"), "PNG")
    good.write_bytes(data)
    outcome = records.load_record(record(good, ("One .", "Two .")), max_pixels=600)
    assert (outcome.image_id, outcome.skip_reason, outcome.detail) == ("good", None, "")
    feature = tf.train.Example.FromString(outcome.example).features.feature
    assert feature["image_id"].bytes_list.value == [b"good"]
    assert feature["image/encoded"].bytes_list.value == [data]
    assert feature["image/height"].int64_list.value == [20]
    assert feature["image/width"].int64_list.value == [30]
    assert feature["captions"].bytes_list.value == [b"One .", b"Two ."]

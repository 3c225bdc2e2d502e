"""Tests of data/layout.py: parsing a Flickr8k-layout directory, and tallying what is skipped.

Pure text parsing (no image is decoded), so every test builds its own small dataset.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from data import layout
from data.layout import (
    CAPTION_DUPLICATE,
    CAPTION_EMPTY,
    CAPTION_FOR_MISSING_IMAGE,
    CAPTION_LINE_MALFORMED,
    CAPTION_NOT_UTF8,
    IMAGE_IN_SEVERAL_SPLITS,
    IMAGE_WITHOUT_CAPTIONS,
    SPLIT_LISTS_UNKNOWN_ID,
    LayoutError,
    scan_layout,
)
from data.synthetic import split_counts
from tests import datasets

SPLITS = ["train", "dev", "test"]
NUM_IMAGES = 40
# 70/15/15 of 40 images.
SPLIT_SIZES = dict(zip(SPLITS, split_counts(NUM_IMAGES, (0.7, 0.15, 0.15))))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return datasets.make_dataset(tmp_path, num_images=NUM_IMAGES, seed=1)


def ids_by_split(scan: layout.LayoutScan) -> dict[str, list[str]]:
    return {split: [r.image_id for r in records] for split, records in scan.records.items()}


def all_ids(scan: layout.LayoutScan) -> list[str]:
    return [r.image_id for records in scan.records.values() for r in records]


def test_clean_dataset_has_no_skips_and_every_record(root: Path) -> None:
    scan = scan_layout(root, SPLITS)

    assert scan.tally.to_dict()["skipped_by_reason"] == {}
    assert scan.tally.fractions() == {"caption_lines": 0.0, "images": 0.0}
    assert scan.tally.images == NUM_IMAGES
    assert scan.tally.caption_lines == NUM_IMAGES * 5
    assert scan.missing_split_files == []
    assert scan.images_in_no_split == 0
    assert {s: len(r) for s, r in scan.records.items()} == SPLIT_SIZES
    # Split membership and order follow the split files; captions follow the generator.
    assert ids_by_split(scan) == {s: datasets.split_ids(root, s) for s in SPLITS}
    expected = datasets.expected_captions(NUM_IMAGES, seed=1)
    for split, records in scan.records.items():
        for record in records:
            assert record.split == split
            assert list(record.captions) == expected[record.image_id]
            assert Path(record.path) == datasets.image_path(root, record.image_id)


def test_captions_keep_their_index_order_not_file_order(root: Path) -> None:
    image_id = datasets.split_ids(root, "train")[0]
    datasets.reverse_captions(root, image_id)
    # A sixth and an eleventh caption, written before the others: #10 sorts after #5.
    datasets.insert_caption_line(root, f"{image_id}.jpg#10\tEleventh caption .".encode(), 0)
    datasets.insert_caption_line(root, f"{image_id}.jpg#5\tSixth caption .".encode(), 0)

    scan = scan_layout(root, SPLITS)

    (record,) = [r for r in scan.records["train"] if r.image_id == image_id]
    expected = datasets.expected_captions(NUM_IMAGES, seed=1)[image_id]
    assert list(record.captions) == expected + ["Sixth caption .", "Eleventh caption ."]


def test_caption_for_missing_image_is_skipped(root: Path) -> None:
    datasets.append_caption_line(root, b"1234567890_0000000000.jpg#0\tA ghost .")
    datasets.append_caption_line(root, b"1234567890_0000000000.jpg#1\tAnother ghost .")

    scan = scan_layout(root, SPLITS)

    assert dict(scan.tally.counts) == {CAPTION_FOR_MISSING_IMAGE: 2}
    assert scan.tally.examples[CAPTION_FOR_MISSING_IMAGE] == ["1234567890_0000000000"] * 2
    assert scan.tally.caption_lines == NUM_IMAGES * 5 + 2
    assert scan.tally.skipped_caption_lines == 2
    assert len(all_ids(scan)) == NUM_IMAGES
    assert "1234567890_0000000000" not in all_ids(scan)


def test_image_without_captions_is_skipped(root: Path) -> None:
    image_id = datasets.split_ids(root, "dev")[1]
    assert datasets.remove_captions(root, image_id) == 5

    scan = scan_layout(root, SPLITS)

    assert dict(scan.tally.counts) == {IMAGE_WITHOUT_CAPTIONS: 1}
    assert scan.tally.examples[IMAGE_WITHOUT_CAPTIONS] == [image_id]
    assert image_id not in all_ids(scan)
    assert len(scan.records["dev"]) == SPLIT_SIZES["dev"] - 1
    assert scan.tally.fractions()["images"] == pytest.approx(1 / NUM_IMAGES)
    assert scan.tally.fractions()["caption_lines"] == 0.0


def test_empty_and_whitespace_captions_are_skipped(root: Path) -> None:
    image_id = datasets.split_ids(root, "train")[3]
    datasets.append_caption_line(root, f"{image_id}.jpg#5\t".encode())
    datasets.append_caption_line(root, f"{image_id}.jpg#6\t  \t ".encode())

    scan = scan_layout(root, SPLITS)

    assert dict(scan.tally.counts) == {CAPTION_EMPTY: 2}
    assert scan.tally.examples[CAPTION_EMPTY] == [
        f"{layout.TOKEN_FILE}:{NUM_IMAGES * 5 + 1}",
        f"{layout.TOKEN_FILE}:{NUM_IMAGES * 5 + 2}",
    ]
    # The image keeps its five real captions and nothing blank.
    (record,) = [r for r in scan.records["train"] if r.image_id == image_id]
    assert len(record.captions) == 5
    assert all(c.strip() for c in record.captions)


def test_non_utf8_line_is_skipped_and_the_rest_still_parses(root: Path) -> None:
    image_id = datasets.split_ids(root, "test")[0]
    # Latin-1 bytes in the middle of the file (line 8 once inserted).
    datasets.insert_caption_line(root, f"{image_id}.jpg#5\tA caf".encode() + b"\xe9 \xff\xfe .", 7)

    scan = scan_layout(root, SPLITS)

    assert dict(scan.tally.counts) == {CAPTION_NOT_UTF8: 1}
    assert scan.tally.examples[CAPTION_NOT_UTF8] == [f"{layout.TOKEN_FILE}:8"]
    assert scan.tally.caption_lines == NUM_IMAGES * 5 + 1
    assert len(all_ids(scan)) == NUM_IMAGES
    expected = datasets.expected_captions(NUM_IMAGES, seed=1)
    for records in scan.records.values():
        for record in records:
            assert list(record.captions) == expected[record.image_id]


def test_malformed_lines_are_skipped(root: Path) -> None:
    image_id = datasets.split_ids(root, "train")[0]
    datasets.append_caption_line(root, f"{image_id}.jpg#5 no tab between key and caption".encode())
    datasets.append_caption_line(root, f"{image_id}.jpg\tno #n index".encode())
    datasets.append_caption_line(root, f"{image_id}.jpg#x\tindex is not a number".encode())

    scan = scan_layout(root, SPLITS)

    assert dict(scan.tally.counts) == {CAPTION_LINE_MALFORMED: 3}
    (record,) = [r for r in scan.records["train"] if r.image_id == image_id]
    assert list(record.captions) == datasets.expected_captions(NUM_IMAGES, seed=1)[image_id]


def test_index_that_is_a_digit_but_not_a_number_is_malformed(root: Path) -> None:
    image_id = datasets.split_ids(root, "train")[0]
    # "²" passes str.isdigit and fails int(); "٣" is an Arabic-Indic three, which int()
    # would read: neither is the ASCII index the layout uses.
    datasets.insert_caption_line(root, f"{image_id}.jpg#\u00b2\tsuperscript two".encode(), 2)
    datasets.append_caption_line(root, f"{image_id}.jpg#\u0663\tArabic-Indic three".encode())

    scan = scan_layout(root, SPLITS)

    assert dict(scan.tally.counts) == {CAPTION_LINE_MALFORMED: 2}
    assert scan.tally.examples[CAPTION_LINE_MALFORMED] == [
        f"{layout.TOKEN_FILE}:3",
        f"{layout.TOKEN_FILE}:{NUM_IMAGES * 5 + 2}",
    ]
    # The scan went on past the bad line: every image keeps its five captions.
    assert len(all_ids(scan)) == NUM_IMAGES
    (record,) = [r for r in scan.records["train"] if r.image_id == image_id]
    assert list(record.captions) == datasets.expected_captions(NUM_IMAGES, seed=1)[image_id]


def test_byte_order_mark_costs_no_caption_and_no_image(root: Path) -> None:
    expected_ids = {s: datasets.split_ids(root, s) for s in SPLITS}
    for path in [root / layout.TOKEN_FILE] + [root / layout.SPLIT_FILES[s] for s in SPLITS]:
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())

    scan = scan_layout(root, SPLITS)

    assert dict(scan.tally.counts) == {}
    assert ids_by_split(scan) == expected_ids
    expected = datasets.expected_captions(NUM_IMAGES, seed=1)
    for records in scan.records.values():
        for record in records:
            assert list(record.captions) == expected[record.image_id]


def test_token_file_written_twice_gives_each_image_its_captions_once(root: Path) -> None:
    token = root / layout.TOKEN_FILE
    token.write_bytes(token.read_bytes() * 2)

    scan = scan_layout(root, SPLITS)

    assert dict(scan.tally.counts) == {CAPTION_DUPLICATE: NUM_IMAGES * 5}
    assert scan.tally.examples[CAPTION_DUPLICATE][0] == f"{layout.TOKEN_FILE}:{NUM_IMAGES * 5 + 1}"
    assert scan.tally.caption_lines == NUM_IMAGES * 10
    assert scan.tally.fractions()["caption_lines"] == 0.5
    expected = datasets.expected_captions(NUM_IMAGES, seed=1)
    for records in scan.records.values():
        for record in records:
            assert list(record.captions) == expected[record.image_id]


def test_duplicate_caption_is_the_same_text_for_the_same_image(root: Path) -> None:
    first, second = datasets.split_ids(root, "train")[:2]
    caption = datasets.expected_captions(NUM_IMAGES, seed=1)[first][0]
    # Same image and text under another index, and with other surrounding blanks: dropped.
    datasets.append_caption_line(root, f"{first}.jpg#7\t{caption}".encode())
    datasets.append_caption_line(root, f"{first}.jpg#8\t  {caption} ".encode())
    # Another image, or the text in another case: not a duplicate.
    datasets.append_caption_line(root, f"{second}.jpg#5\t{caption}".encode())
    datasets.append_caption_line(root, f"{first}.jpg#9\t{caption.upper()}".encode())

    scan = scan_layout(root, SPLITS)

    assert dict(scan.tally.counts) == {CAPTION_DUPLICATE: 2}
    assert scan.tally.examples[CAPTION_DUPLICATE] == [
        f"{layout.TOKEN_FILE}:{NUM_IMAGES * 5 + 1}",
        f"{layout.TOKEN_FILE}:{NUM_IMAGES * 5 + 2}",
    ]
    by_id = {r.image_id: r for r in scan.records["train"]}
    assert by_id[first].captions.count(caption) == 1
    assert by_id[first].captions[-1] == caption.upper()
    assert by_id[second].captions[-1] == caption


def test_blank_lines_are_neither_records_nor_skips(root: Path) -> None:
    datasets.insert_caption_line(root, b"", 3)
    datasets.append_caption_line(root, b"   ")

    scan = scan_layout(root, SPLITS)

    assert scan.tally.caption_lines == NUM_IMAGES * 5
    assert sum(scan.tally.counts.values()) == 0


def test_split_listing_an_unknown_id_is_skipped(root: Path) -> None:
    datasets.add_split_entry(root, "dev", "9999999999_notondisk0.jpg")

    scan = scan_layout(root, SPLITS)

    assert dict(scan.tally.counts) == {SPLIT_LISTS_UNKNOWN_ID: 1}
    assert "9999999999_notondisk0" in scan.tally.examples[SPLIT_LISTS_UNKNOWN_ID][0]
    assert layout.SPLIT_FILES["dev"] in scan.tally.examples[SPLIT_LISTS_UNKNOWN_ID][0]
    assert len(scan.records["dev"]) == SPLIT_SIZES["dev"]
    assert scan.tally.images == NUM_IMAGES + 1


def test_image_in_two_splits_is_kept_in_the_first_only(root: Path) -> None:
    image_id = datasets.split_ids(root, "train")[2]
    datasets.add_split_entry(root, "test", f"{image_id}.jpg")

    scan = scan_layout(root, SPLITS)

    assert dict(scan.tally.counts) == {IMAGE_IN_SEVERAL_SPLITS: 1}
    assert image_id in scan.tally.examples[IMAGE_IN_SEVERAL_SPLITS][0]
    by_split = ids_by_split(scan)
    assert image_id in by_split["train"]
    assert image_id not in by_split["test"]
    assert len(by_split["test"]) == SPLIT_SIZES["test"]
    ids = all_ids(scan)
    assert len(ids) == len(set(ids)) == NUM_IMAGES


def test_missing_test_split_file_is_fine(root: Path) -> None:
    datasets.remove_split_file(root, "test")

    scan = scan_layout(root, SPLITS)

    assert scan.missing_split_files == ["test"]
    assert sorted(scan.records) == ["dev", "train"]
    assert sum(scan.tally.counts.values()) == 0
    # Its images are on disk but belong to no split; that is reported, not skipped.
    assert scan.images_in_no_split == SPLIT_SIZES["test"]


def test_image_in_no_split_file_is_counted(root: Path) -> None:
    (root / layout.IMAGE_DIR / "1111111111_extraextra.jpg").write_bytes(
        datasets.image_path(root, datasets.split_ids(root, "train")[0]).read_bytes()
    )

    scan = scan_layout(root, SPLITS)

    assert scan.images_in_no_split == 1
    assert len(all_ids(scan)) == NUM_IMAGES


def test_directory_not_in_the_layout_is_a_helpful_error(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(b"x")

    with pytest.raises(LayoutError) as error:
        scan_layout(tmp_path, SPLITS)

    message = str(error.value)
    assert str(tmp_path) in message
    assert layout.IMAGE_DIR in message and layout.TOKEN_FILE in message
    assert "CAPTIONER_DATA_DIR" in message


def test_no_split_file_at_all_is_an_error(root: Path) -> None:
    for split in SPLITS:
        datasets.remove_split_file(root, split)

    with pytest.raises(LayoutError, match="none of the split files"):
        scan_layout(root, SPLITS)


def test_unknown_split_name_is_an_error(root: Path) -> None:
    with pytest.raises(LayoutError, match="unknown split 'validation'"):
        scan_layout(root, ["train", "validation"])


def test_examples_per_reason_are_capped_but_counts_are_not(root: Path) -> None:
    extra = layout.MAX_EXAMPLES_PER_REASON + 5
    for n in range(extra):
        datasets.append_caption_line(root, f"malformed line {n}".encode())

    scan = scan_layout(root, SPLITS)

    assert scan.tally.counts[CAPTION_LINE_MALFORMED] == extra
    assert len(scan.tally.examples[CAPTION_LINE_MALFORMED]) == layout.MAX_EXAMPLES_PER_REASON
    report = scan.tally.to_dict()
    assert report["skipped_caption_lines"] == extra
    assert report["skipped_fraction"]["caption_lines"] == pytest.approx(extra / (NUM_IMAGES * 5 + extra))

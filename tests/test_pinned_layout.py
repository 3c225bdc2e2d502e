"""The skip limit of ingestion (layout.SkipTally) below, at and above its threshold.

The limit applies to images and to caption lines, each on its own, and exactly at the
limit is allowed: a limit of 0.0 accepts clean data.
"""

from __future__ import annotations

import pytest

from data import layout


def tally(images: int, caption_lines: int, skipped: dict[str, int]) -> layout.SkipTally:
    t = layout.SkipTally(caption_lines=caption_lines, images=images)
    for reason, count in skipped.items():
        for i in range(count):
            t.skip(reason, f"{reason} {i}")
    return t


def test_clean_data_passes_a_zero_limit():
    assert tally(10, 50, {}).over(0.0) == {}
    assert tally(0, 0, {}).fractions() == {"caption_lines": 0.0, "images": 0.0}


@pytest.mark.parametrize(
    ("limit", "failing"),
    [(0.09, {"images": 0.1}), (0.1, {}), (0.11, {})],
    ids=["below-the-fraction", "at", "above"],
)
def test_image_skips_against_the_limit(limit, failing):
    t = tally(10, 50, {layout.IMAGE_CORRUPT: 1})
    assert t.over(limit) == failing


@pytest.mark.parametrize(
    ("limit", "failing"),
    [(0.03, {"caption_lines": 0.04}), (0.04, {}), (0.05, {})],
    ids=["below-the-fraction", "at", "above"],
)
def test_caption_line_skips_are_checked_on_their_own(limit, failing):
    # 2 of 50 caption lines are bad; no image is.
    t = tally(10, 50, {layout.CAPTION_EMPTY: 1, layout.CAPTION_LINE_MALFORMED: 1})
    assert t.over(limit) == pytest.approx(failing)


def test_both_kinds_over_the_limit_are_both_named():
    t = tally(4, 8, {layout.SPLIT_LISTS_UNKNOWN_ID: 1, layout.CAPTION_NOT_UTF8: 1})
    assert t.over(0.1) == {"caption_lines": 0.125, "images": 0.25}


def test_every_reason_counts_against_its_own_kind():
    t = tally(100, 100, {r: 1 for r in layout.CAPTION_REASONS + layout.IMAGE_REASONS})
    assert (t.skipped_caption_lines, t.skipped_images) == (5, 6)
    assert t.fractions() == {"caption_lines": 0.05, "images": 0.06}
    report = t.to_dict()
    assert report["total_caption_lines"] == 100 and report["total_images"] == 100
    assert report["skipped_by_reason"] == {r: 1 for r in sorted(layout.CAPTION_REASONS + layout.IMAGE_REASONS)}
    assert report["examples_by_reason"][layout.IMAGE_CORRUPT] == [f"{layout.IMAGE_CORRUPT} 0"]


def test_a_reason_keeps_at_most_the_cap_of_examples():
    t = tally(1, 1, {layout.IMAGE_CORRUPT: layout.MAX_EXAMPLES_PER_REASON + 1})
    assert t.counts[layout.IMAGE_CORRUPT] == layout.MAX_EXAMPLES_PER_REASON + 1
    assert len(t.examples[layout.IMAGE_CORRUPT]) == layout.MAX_EXAMPLES_PER_REASON
    assert layout.MAX_EXAMPLES_PER_REASON == 20


@pytest.mark.parametrize(
    ("name", "image_id"),
    [("1000_abc.jpg", "1000_abc"), (" 1000_abc.JPG \n", "1000_abc"), ("1000_abc", "1000_abc"), ("a.png", "a.png")],
)
def test_image_id_of(name, image_id):
    assert layout.image_id_of(name) == image_id


def test_the_reasons_are_the_ones_the_readme_documents_with_what_they_count_against():
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    documented = dict(re.findall(r"^\| .+ \| `([a-z0-9_]+)` \| (images|caption lines) \|$", readme, re.M))
    assert documented == {
        **{reason: "images" for reason in layout.IMAGE_REASONS},
        **{reason: "caption lines" for reason in layout.CAPTION_REASONS},
    }


def test_available_splits_are_the_configured_ones_with_a_split_file(tmp_path):
    (tmp_path / layout.SPLIT_FILES["train"]).write_text("")
    (tmp_path / layout.SPLIT_FILES["test"]).write_text("")
    assert layout.available_splits(tmp_path, ["test", "dev", "train", "extra"]) == ["test", "train"]


def test_fractions_divide_by_the_totals_even_when_they_are_one():
    t = tally(1, 1, {layout.IMAGE_CORRUPT: 1, layout.CAPTION_EMPTY: 1})
    assert t.fractions() == {"caption_lines": 1.0, "images": 1.0}
    report = t.to_dict()
    assert (report["skipped_caption_lines"], report["skipped_images"]) == (1, 1)
    assert report["skipped_fraction"] == {"caption_lines": 1.0, "images": 1.0}


def test_the_layout_needs_both_the_image_folder_and_the_captions(tmp_path):
    (tmp_path / layout.IMAGE_DIR).mkdir()
    assert not layout.looks_like_flickr8k_layout(tmp_path)
    (tmp_path / layout.TOKEN_FILE).write_text("")
    assert layout.looks_like_flickr8k_layout(tmp_path)
    (tmp_path / layout.IMAGE_DIR).rmdir()
    assert not layout.looks_like_flickr8k_layout(tmp_path)


def test_split_files_that_are_not_utf8_still_list_their_ids(tmp_path):
    split_file = tmp_path / "split.txt"
    split_file.write_bytes(b"\xff1.jpg\n2.jpg\n\n2.jpg\n")
    assert layout.read_split_ids(split_file) == ["\ufffd1", "2"]


def test_an_unknown_split_name_lists_the_known_ones(tmp_path):
    (tmp_path / layout.IMAGE_DIR).mkdir()
    (tmp_path / layout.TOKEN_FILE).write_text("")
    with pytest.raises(layout.LayoutError, match=r"^unknown split 'val'; the layout has train, dev, test$"):
        layout.scan_layout(tmp_path, ["val"])


def test_records_are_immutable_values():
    import dataclasses

    record = layout.ImageRecord("a", "a.jpg", "train", ("A .",))
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.split = "test"

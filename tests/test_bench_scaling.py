"""bench/scaling.py's subsets: the first N images per split in sorted order, split shares kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.scaling import make_subset, proportional_counts
from data import layout


def _layout(root: Path, train: list[str], dev: list[str]) -> None:
    (root / layout.IMAGE_DIR).mkdir(parents=True)
    for image_id in train + dev:
        (root / layout.IMAGE_DIR / f"{image_id}.jpg").write_bytes(b"jpeg " + image_id.encode())
    (root / layout.SPLIT_FILES["train"]).write_text("".join(f"{i}.jpg\n" for i in train))
    (root / layout.SPLIT_FILES["dev"]).write_text("".join(f"{i}.jpg\n" for i in dev))
    lines = [f"{i}.jpg#{n}\tcaption {n} of {i} .\n" for i in reversed(train + dev) for n in range(5)]
    (root / layout.TOKEN_FILE).write_text("".join(lines))


def test_proportional_counts_keep_split_shares_and_sum_to_n():
    assert proportional_counts({"train": 6000, "dev": 1000}, 1000) == {"train": 857, "dev": 143}
    assert proportional_counts({"train": 6000, "dev": 1000}, 3500) == {"train": 3000, "dev": 500}
    assert proportional_counts({"train": 6000, "dev": 1000}, 7000) == {"train": 6000, "dev": 1000}
    assert proportional_counts({"train": 1, "dev": 1}, 1) == {"train": 1, "dev": 0}  # tie: first split
    for bad in (0, 7001):
        with pytest.raises(ValueError):
            proportional_counts({"train": 6000, "dev": 1000}, bad)


def test_subset_takes_first_sorted_ids_per_split(tmp_path: Path):
    source = tmp_path / "source"
    train = [f"t{i:02d}" for i in range(12)][::-1]  # split files need not be sorted
    dev = ["d3", "d1", "d2", "d0"]
    _layout(source, train, dev)

    chosen = make_subset(source, 8, tmp_path / "subset")

    assert chosen == {"train": ["t00", "t01", "t02", "t03", "t04", "t05"], "dev": ["d0", "d1"]}
    subset = tmp_path / "subset"
    scan = layout.scan_layout(subset, ["train", "dev", "test"])
    assert {s: [r.image_id for r in recs] for s, recs in scan.records.items()} == chosen
    assert scan.tally.to_dict()["skipped_images"] == 0 and scan.images_in_no_split == 0
    assert all(len(r.captions) == 5 for recs in scan.records.values() for r in recs)
    image = subset / layout.IMAGE_DIR / "t03.jpg"
    assert image.is_symlink() and image.read_bytes() == b"jpeg t03"
    assert sorted(p.stem for p in (subset / layout.IMAGE_DIR).iterdir()) == sorted(chosen["train"] + chosen["dev"])
    # The token file keeps the chosen images' lines, in the source's order, byte for byte.
    kept = [line for line in (source / layout.TOKEN_FILE).read_text().splitlines(keepends=True)
            if line.split(".jpg")[0] in chosen["train"] + chosen["dev"]]
    assert (subset / layout.TOKEN_FILE).read_text() == "".join(kept)
    assert not (subset / layout.SPLIT_FILES["test"]).exists()


def test_smaller_subset_is_inside_larger_and_whole_is_everything(tmp_path: Path):
    source = tmp_path / "source"
    _layout(source, [f"t{i:02d}" for i in range(12)], [f"d{i}" for i in range(4)])
    small = make_subset(source, 4, tmp_path / "small")
    whole = make_subset(source, 16, tmp_path / "whole")
    assert all(set(small[s]) <= set(whole[s]) for s in small)
    assert (tmp_path / "whole" / layout.TOKEN_FILE).read_bytes() == (source / layout.TOKEN_FILE).read_bytes()
    with pytest.raises(ValueError):
        make_subset(source, 17, tmp_path / "too_many")

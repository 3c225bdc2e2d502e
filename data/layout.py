"""Reads a dataset directory in the Flickr8k release layout into per-split image records.

Called by the Flickr8kExampleGen executor (components/flickr8k_example_gen) before it
loads any image, and by tools that need the listing (benchmarks, retraining hashes).
Everything here is text parsing: images are checked later, in Beam. Bad lines are not
fatal: each is skipped and counted by reason in a `SkipTally`, so a run can report them
and decide, against the configured fraction, whether to go on. Text files may start with
a UTF-8 byte-order mark (Windows editors write one); it is dropped, not read as part of
the first image id.

The layout:
    Flicker8k_Dataset/<id>.jpg          images (the release's spelling of the folder)
    Flickr8k.token.txt                  "<id>.jpg#<n>\t<caption>" lines
    Flickr_8k.{train,dev,test}Images.txt  "<id>.jpg" per line; a missing file is fine
"""

from __future__ import annotations

import codecs
import collections
import dataclasses
import logging
import re
from pathlib import Path
from typing import Iterable

IMAGE_DIR = "Flicker8k_Dataset"
TOKEN_FILE = "Flickr8k.token.txt"
SPLIT_FILES = {
    "train": "Flickr_8k.trainImages.txt",
    "dev": "Flickr_8k.devImages.txt",
    "test": "Flickr_8k.testImages.txt",
}
# How many offending ids or line numbers a report keeps per reason.
MAX_EXAMPLES_PER_REASON = 20

log = logging.getLogger(__name__)


class LayoutError(ValueError):
    """The directory is not in the Flickr8k layout at all (not a skippable record)."""


# Reasons a record is skipped. Caption-line reasons count against caption lines,
# image reasons against images (see SkipTally.fractions).
CAPTION_NOT_UTF8 = "caption_not_utf8"
CAPTION_LINE_MALFORMED = "caption_line_malformed"
CAPTION_EMPTY = "caption_empty"
CAPTION_FOR_MISSING_IMAGE = "caption_for_missing_image"
CAPTION_DUPLICATE = "caption_duplicate"
IMAGE_WITHOUT_CAPTIONS = "image_without_captions"
IMAGE_CORRUPT = "image_corrupt"
IMAGE_TOO_LARGE = "image_too_large"
IMAGE_IN_SEVERAL_SPLITS = "image_in_several_splits"
IMAGE_NOT_REGULAR_FILE = "image_not_regular_file"
SPLIT_LISTS_UNKNOWN_ID = "split_lists_unknown_id"
CAPTION_REASONS = (
    CAPTION_NOT_UTF8,
    CAPTION_LINE_MALFORMED,
    CAPTION_EMPTY,
    CAPTION_FOR_MISSING_IMAGE,
    CAPTION_DUPLICATE,
)
IMAGE_REASONS = (
    IMAGE_WITHOUT_CAPTIONS,
    IMAGE_CORRUPT,
    IMAGE_TOO_LARGE,
    IMAGE_IN_SEVERAL_SPLITS,
    IMAGE_NOT_REGULAR_FILE,
    SPLIT_LISTS_UNKNOWN_ID,
)
# A caption's `#n` index: ASCII digits only. `str.isdigit` also accepts "²" or "٣",
# which `int` rejects or reads as another script's digit.
_CAPTION_INDEX = re.compile(r"[0-9]+")


@dataclasses.dataclass(frozen=True)
class ImageRecord:
    """One image to ingest: its id (file name without .jpg), file and captions."""

    image_id: str
    path: str
    split: str
    captions: tuple[str, ...]


@dataclasses.dataclass
class SkipTally:
    """Skipped records by reason, with a few examples each, and the totals they come from."""

    caption_lines: int = 0
    images: int = 0
    counts: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    examples: dict[str, list[str]] = dataclasses.field(default_factory=dict)

    def skip(self, reason: str, what: str) -> None:
        self.counts[reason] += 1
        kept = self.examples.setdefault(reason, [])
        if len(kept) < MAX_EXAMPLES_PER_REASON:
            kept.append(what)

    @property
    def skipped_caption_lines(self) -> int:
        return sum(self.counts[r] for r in CAPTION_REASONS)

    @property
    def skipped_images(self) -> int:
        return sum(self.counts[r] for r in IMAGE_REASONS)

    def fractions(self) -> dict[str, float]:
        return {
            "caption_lines": self.skipped_caption_lines / max(self.caption_lines, 1),
            "images": self.skipped_images / max(self.images, 1),
        }

    def over(self, max_fraction: float) -> dict[str, float]:
        """The skipped fractions above `max_fraction` (images and caption lines each): the
        run fails on these. Exactly at the limit passes, so a limit of 0.0 accepts clean data."""
        return {kind: value for kind, value in self.fractions().items() if value > max_fraction}

    def to_dict(self) -> dict:
        return {
            "total_caption_lines": self.caption_lines,
            "total_images": self.images,
            "skipped_caption_lines": self.skipped_caption_lines,
            "skipped_images": self.skipped_images,
            "skipped_fraction": self.fractions(),
            "skipped_by_reason": dict(sorted(self.counts.items())),
            "examples_by_reason": {k: v for k, v in sorted(self.examples.items())},
        }


@dataclasses.dataclass
class LayoutScan:
    """What the text files say: records per split (images not yet checked) and skips."""

    records: dict[str, list[ImageRecord]]
    tally: SkipTally
    missing_split_files: list[str]
    images_in_no_split: int


def image_id_of(name: str) -> str:
    """`1000268201_693b08cb0e.jpg` -> `1000268201_693b08cb0e`."""
    name = name.strip()
    return name[: -len(".jpg")] if name.lower().endswith(".jpg") else name


def looks_like_flickr8k_layout(root: Path | str) -> bool:
    """True when `root` holds the images folder and the captions (split files are optional)."""
    root = Path(root)
    return (root / IMAGE_DIR).is_dir() and (root / TOKEN_FILE).is_file()


def available_splits(root: Path, splits: Iterable[str]) -> list[str]:
    """The configured splits whose split file exists (the test split may be held out)."""
    return [s for s in splits if s in SPLIT_FILES and (Path(root) / SPLIT_FILES[s]).is_file()]


def read_captions(token_file: Path, tally: SkipTally) -> dict[str, list[str]]:
    """Captions per image id, in the order of their `#n` index; bad lines are tallied.

    A line that repeats an image's caption (same text once stripped, whatever its index)
    is dropped as `caption_duplicate`: a token file concatenated twice must not give an
    image ten captions. The first line in file order is the one kept.
    """
    captions: dict[str, list[tuple[int, str]]] = collections.defaultdict(list)
    seen: set[tuple[str, str]] = set()
    with open(token_file, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            if line_no == 1:
                raw = raw.removeprefix(codecs.BOM_UTF8)
            if not raw.strip():
                continue  # blank lines are layout, not records
            tally.caption_lines += 1
            where = f"{token_file.name}:{line_no}"
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError:
                tally.skip(CAPTION_NOT_UTF8, where)
                continue
            key, sep, caption = line.partition("\t")
            name, hash_sign, index = key.partition("#")
            if not sep or not hash_sign or not _CAPTION_INDEX.fullmatch(index.strip()) or not name.strip():
                tally.skip(CAPTION_LINE_MALFORMED, where)
                continue
            caption = caption.strip()
            if not caption:
                tally.skip(CAPTION_EMPTY, where)
                continue
            image_id = image_id_of(name)
            if (image_id, caption) in seen:
                tally.skip(CAPTION_DUPLICATE, where)
                continue
            seen.add((image_id, caption))
            captions[image_id].append((int(index), caption))
    return {image_id: [c for _, c in sorted(items)] for image_id, items in captions.items()}


def read_split_ids(split_file: Path) -> list[str]:
    """Image ids listed in a split file, in file order, without duplicates."""
    seen: dict[str, None] = {}
    data = split_file.read_bytes().removeprefix(codecs.BOM_UTF8)
    for raw in data.splitlines():
        name = raw.decode("utf-8", errors="replace").strip()
        if name:
            seen.setdefault(image_id_of(name), None)
    return list(seen)


def scan_layout(root: Path, splits: Iterable[str]) -> LayoutScan:
    """Pair split files, captions and image files; every dropped record is tallied."""
    root = Path(root)
    if not looks_like_flickr8k_layout(root):
        raise LayoutError(
            f"{root} is not in the Flickr8k layout: need {IMAGE_DIR}/ and {TOKEN_FILE} "
            "(run `make data-flickr8k`, or set CAPTIONER_DATA_DIR to a copy)"
        )
    tally = SkipTally()
    captions = read_captions(root / TOKEN_FILE, tally)
    on_disk = {image_id_of(p.name): p for p in (root / IMAGE_DIR).iterdir() if p.suffix.lower() == ".jpg"}

    records: dict[str, list[ImageRecord]] = {}
    missing: list[str] = []
    assigned: dict[str, str] = {}
    listed: set[str] = set()
    for split in splits:
        if split not in SPLIT_FILES:
            raise LayoutError(f"unknown split {split!r}; the layout has {', '.join(SPLIT_FILES)}")
        split_file = root / SPLIT_FILES[split]
        if not split_file.is_file():
            log.info("split %s: %s is absent, so the split is left out", split, split_file.name)
            missing.append(split)
            continue
        records[split] = []
        for image_id in read_split_ids(split_file):
            tally.images += 1
            listed.add(image_id)
            if image_id not in on_disk:
                tally.skip(SPLIT_LISTS_UNKNOWN_ID, f"{split_file.name}: {image_id}")
            elif image_id in assigned:
                tally.skip(IMAGE_IN_SEVERAL_SPLITS, f"{image_id} ({assigned[image_id]}, {split})")
            elif not captions.get(image_id):
                tally.skip(IMAGE_WITHOUT_CAPTIONS, image_id)
            else:
                assigned[image_id] = split
                records[split].append(
                    ImageRecord(image_id, str(on_disk[image_id]), split, tuple(captions[image_id]))
                )
    if not records:
        raise LayoutError(f"{root} has none of the split files {list(SPLIT_FILES.values())}")

    for image_id, lines in captions.items():
        if image_id not in on_disk:
            for _ in lines:
                tally.skip(CAPTION_FOR_MISSING_IMAGE, image_id)
    in_no_split = sum(1 for image_id in on_disk if image_id not in listed)
    return LayoutScan(records, tally, missing, in_no_split)

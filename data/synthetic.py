"""A small synthetic image-caption dataset in the Flickr8k release layout.

The tests and the `smoke` profile need data that is tiny, made on the spot
(no download), byte-for-byte reproducible, and laid out exactly like the real
release so the same ingestion code reads both. A caption model must also be
able to *learn* it, so every caption is a function of what is drawn: one
shape (circle, square or triangle) of one colour on a background of another
colour, in one of two sizes, described by five fixed templates with few
synonyms.

Layout written into ``out_dir``::

    Flicker8k_Dataset/<id>.jpg        (the release's own misspelling)
    Flickr8k.token.txt                <id>.jpg#<n>\\t<Caption .>, n = 0..4
    Flickr_8k.trainImages.txt         one <id>.jpg a line
    Flickr_8k.devImages.txt
    Flickr_8k.testImages.txt
    synthetic_spec.json               the spec it was made from (idempotency)

Run ``python -m data.synthetic --out DIR [--num-images N] [--seed S]``.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import os
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from configs.config import SyntheticConfig
from data import layout

# Bumped whenever the output for a given spec changes, so a directory made by
# an older generator is regenerated instead of silently reused.
GENERATOR_VERSION = 1

# The release layout is defined once, in data/layout.py.
IMAGES_DIR = layout.IMAGE_DIR
TOKEN_FILE = layout.TOKEN_FILE
SPLIT_FILES = layout.SPLIT_FILES
SPEC_FILE = "synthetic_spec.json"
CAPTIONS_PER_IMAGE = 5
JPEG_QUALITY = 90

# Saturated, far-apart colours so a small CNN separates them after JPEG and
# resizing; every name is a single lowercase word.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (30, 60, 220),
    "yellow": (240, 220, 30),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
}
COLORS: tuple[str, ...] = tuple(PALETTE)
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
SIZES: tuple[str, ...] = ("small", "large")

# Half the shape's extent as a fraction of the image's shorter side; "small"
# is half of "large" so the two sizes stay distinct after any resize.
_LARGE_RADIUS = {"circle": 0.38, "square": 0.34, "triangle": 0.44}
_SIZE_SCALE = {"small": 0.5, "large": 1.0}
# Keeps shapes off the border so the corners always show the background.
_MARGIN = 0.06
_NOISE_SIGMA = 6.0  # "lightly noisy": visible grain, colours unaffected

# The few synonyms the captions use; one fixed choice per template keeps the
# mapping pixels -> words learnable.
_BALL_NOUN = {"circle": "ball", "square": "block", "triangle": "triangle"}
_SHAPE_ADJ = {"circle": "round", "square": "square", "triangle": "triangular"}
_BIG_WORD = {"small": "small", "large": "big"}


def spec_json(spec: SyntheticConfig) -> dict:
    """The JSON form stored next to the data to detect a changed spec."""
    fields = {**asdict(spec), "split_fractions": list(spec.split_fractions)}
    return {"generator_version": GENERATOR_VERSION, **fields}


@dataclass(frozen=True)
class ImageAttributes:
    """What one image shows; both its pixels and its captions derive from it."""

    shape: str
    color: str
    background: str
    size: str
    # Where the shape sits within the free room, -1 (left/top) .. 1 (right/bottom).
    offset: tuple[float, float] = (0.0, 0.0)
    # 0 draws a plain background; > 0 adds Gaussian grain of that sigma.
    noise: float = 0.0
    noise_seed: int = 0

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ValueError(f"unknown shape {self.shape!r}")
        if self.color not in PALETTE or self.background not in PALETTE:
            raise ValueError(f"unknown colour {self.color!r} / {self.background!r}")
        if self.color == self.background:
            raise ValueError("shape and background colours must differ to be visible")
        if self.size not in SIZES:
            raise ValueError(f"unknown size {self.size!r}")


@dataclass(frozen=True)
class ImageRecord:
    """One planned image: its Flickr-style id, attributes and pixel size."""

    image_id: str
    attributes: ImageAttributes
    size: tuple[int, int]  # (width, height)

    @property
    def filename(self) -> str:
        return f"{self.image_id}.jpg"


# --------------------------------------------------------------------------
# Captions


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _sentence(words: str) -> str:
    """Release style: sentence case, space before the final full stop."""
    return f"{words[0].upper()}{words[1:]} ."


def describe(attributes: ImageAttributes) -> list[str]:
    """The five captions of an image, in Flickr8k token-file form.

    Every template names the shape's colour, the shape and the background
    colour; size words appear only in templates that encode the drawn size, so
    a model that reads the pixels can reproduce any of them.
    """
    c, bg, shape, size = attributes.color, attributes.background, attributes.shape, attributes.size
    big, ball, adj = _BIG_WORD[size], _BALL_NOUN[shape], _SHAPE_ADJ[shape]
    captions = [
        f"{_article(c)} {c} {shape} on {_article(bg)} {bg} background",
        f"{_article(big)} {big} {c} {ball} against {bg}",
        f"{_article(c)} {c} {adj} shape on {_article(bg)} {bg} backdrop",
        f"there is {_article(c)} {c} {shape} in front of {_article(bg)} {bg} background",
        f"{_article(size)} {size} {c} {shape} drawn on {_article(bg)} {bg} background",
    ]
    return [_sentence(caption) for caption in captions]


# --------------------------------------------------------------------------
# Pixels


def _extent(attributes: ImageAttributes, short_side: int) -> tuple[float, float, float, float]:
    """Distances (left, top, right, bottom) from the shape's centre to its edges."""
    r = _LARGE_RADIUS[attributes.shape] * _SIZE_SCALE[attributes.size] * short_side
    if attributes.shape == "triangle":
        # Equilateral, pointing up, centred on its centroid.
        half_base = r * math.sqrt(3) / 2
        return half_base, r, half_base, r / 2
    return r, r, r, r


def shape_center(attributes: ImageAttributes, size: tuple[int, int]) -> tuple[float, float]:
    """Where ``draw`` puts the shape's centre, so tests can probe its colour."""
    width, height = size
    left, top, right, bottom = _extent(attributes, min(width, height))
    margin = _MARGIN * min(width, height)
    centre = []
    for offset, length, before, after in (
        (attributes.offset[0], width, left, right),
        (attributes.offset[1], height, top, bottom),
    ):
        lo, hi = before + margin, length - after - margin
        mid, half_room = (lo + hi) / 2, max(0.0, (hi - lo) / 2)
        centre.append(mid + max(-1.0, min(1.0, offset)) * half_room)
    return centre[0], centre[1]


def draw(attributes: ImageAttributes, size: tuple[int, int]) -> Image.Image:
    """Render ``attributes`` as an RGB image of ``size`` (width, height).

    Pure: the same arguments always give the same pixels (the grain comes
    from ``attributes.noise_seed``), which is what makes the dataset
    reproducible and lets tests compare pixels with captions.
    """
    width, height = size
    image = Image.new("RGB", (width, height), PALETTE[attributes.background])
    pen = ImageDraw.Draw(image)
    cx, cy = shape_center(attributes, size)
    left, top, right, bottom = _extent(attributes, min(width, height))
    fill = PALETTE[attributes.color]
    if attributes.shape == "circle":
        pen.ellipse((cx - left, cy - top, cx + right, cy + bottom), fill=fill)
    elif attributes.shape == "square":
        pen.rectangle((cx - left, cy - top, cx + right, cy + bottom), fill=fill)
    else:
        pen.polygon([(cx, cy - top), (cx + right, cy + bottom), (cx - left, cy + bottom)], fill=fill)
    if attributes.noise > 0:
        rng = np.random.default_rng(attributes.noise_seed)
        pixels = np.asarray(image, dtype=np.float32)
        pixels += rng.normal(0.0, attributes.noise, size=pixels.shape).astype(np.float32)
        image = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "RGB")
    return image


def encode_jpeg(image: Image.Image) -> bytes:
    """JPEG bytes without metadata, so identical pixels give identical files."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


# --------------------------------------------------------------------------
# Planning


def image_id(seed: int, index: int) -> str:
    """A Flickr-shaped id (``1000268201_693b08cb0e``), fixed by seed and index."""
    digest = hashlib.sha1(f"synthetic:{seed}:{index}".encode()).hexdigest()
    return f"{1000000000 + index}_{digest[:10]}"


def _balanced(rng: np.random.Generator, values: Sequence, n: int) -> list:
    """``n`` values cycling through ``values`` in random order.

    Balanced rather than i.i.d. so even a 60-image set shows every shape,
    colour and size about equally often.
    """
    repeated = [values[i % len(values)] for i in range(n)]
    return [repeated[i] for i in rng.permutation(n)]


def plan_dataset(spec: SyntheticConfig) -> list[ImageRecord]:
    """Every image's id, attributes and size, from ``spec`` alone (no I/O)."""
    rng = np.random.default_rng(spec.seed)
    n = spec.num_images
    shapes = _balanced(rng, SHAPES, n)
    colors = _balanced(rng, COLORS, n)
    # The background is a non-zero step round the palette from the shape
    # colour, so the two always differ and backgrounds stay balanced too.
    steps = _balanced(rng, range(1, len(COLORS)), n)
    sizes = _balanced(rng, SIZES, n)
    noisy = _balanced(rng, (False, True), n)
    records = []
    for i in range(n):
        background = COLORS[(COLORS.index(colors[i]) + steps[i]) % len(COLORS)]
        width, height = (int(v) for v in rng.integers(spec.min_size, spec.max_size + 1, size=2))
        offset = tuple(float(v) for v in np.round(rng.uniform(-1.0, 1.0, size=2), 6))
        attributes = ImageAttributes(
            shape=shapes[i],
            color=colors[i],
            background=background,
            size=sizes[i],
            offset=offset,
            noise=_NOISE_SIGMA if noisy[i] else 0.0,
            noise_seed=int(rng.integers(0, 2**31 - 1)),
        )
        records.append(ImageRecord(image_id(spec.seed, i), attributes, (width, height)))
    return records


def split_counts(n: int, fractions: Sequence[float]) -> list[int]:
    """Split ``n`` by ``fractions`` (largest remainder), non-empty where possible.

    Any split with a positive fraction gets at least one image when there are
    enough images, so a tiny smoke set still has a dev and a test split.
    """
    raw = [n * f for f in fractions]
    counts = [math.floor(r) for r in raw]
    by_remainder = sorted(range(len(raw)), key=lambda k: (-(raw[k] - counts[k]), k))
    for k in by_remainder[: n - sum(counts)]:
        counts[k] += 1
    wanted = [k for k, f in enumerate(fractions) if f > 0]
    if n >= len(wanted):
        for k in wanted:
            if counts[k] == 0:
                donor = max(range(len(counts)), key=lambda j: counts[j])
                counts[donor] -= 1
                counts[k] += 1
    return counts


def assign_splits(records: Sequence[ImageRecord], spec: SyntheticConfig) -> dict[str, list[ImageRecord]]:
    """Partition the images (never one image in two splits) by ``spec``'s fractions."""
    # A separate stream so changing the split does not change the images.
    order = np.random.default_rng([spec.seed, 1]).permutation(len(records))
    counts = split_counts(len(records), spec.split_fractions)
    splits: dict[str, list[ImageRecord]] = {}
    start = 0
    for name, count in zip(SPLIT_FILES, counts):
        chosen = sorted(order[start : start + count])
        splits[name] = [records[i] for i in chosen]
        start += count
    return splits


# --------------------------------------------------------------------------
# Writing


def _write_text(path: Path, lines: Sequence[str]) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as handle:
        handle.writelines(f"{line}\n" for line in lines)


def _write_dataset(directory: Path, spec: SyntheticConfig) -> dict:
    records = plan_dataset(spec)
    images_dir = directory / IMAGES_DIR
    images_dir.mkdir()
    token_lines = []
    for record in records:
        (images_dir / record.filename).write_bytes(encode_jpeg(draw(record.attributes, record.size)))
        for n, caption in enumerate(describe(record.attributes)):
            token_lines.append(f"{record.filename}#{n}\t{caption}")
    _write_text(directory / TOKEN_FILE, token_lines)
    splits = assign_splits(records, spec)
    for name, filename in SPLIT_FILES.items():
        _write_text(directory / filename, [record.filename for record in splits[name]])
    # Written last: its presence marks a complete directory.
    stored = json.dumps(spec_json(spec), indent=2, sort_keys=True) + "\n"
    (directory / SPEC_FILE).write_text(stored, encoding="utf-8")
    return _summary(directory)


def _summary(directory: Path) -> dict:
    """Counts read back from the files, so a reused directory reports the same."""
    splits = {
        name: len((directory / filename).read_text(encoding="utf-8").split())
        for name, filename in SPLIT_FILES.items()
    }
    captions = len((directory / TOKEN_FILE).read_text(encoding="utf-8").splitlines())
    return {
        "out_dir": str(directory),
        "num_images": sum(splits.values()),
        "num_captions": captions,
        "splits": splits,
    }


def _is_complete(directory: Path, spec: SyntheticConfig) -> bool:
    """True when ``directory`` already holds this spec's dataset."""
    try:
        stored = json.loads((directory / SPEC_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    files = [TOKEN_FILE, *SPLIT_FILES.values()]
    return stored == spec_json(spec) and (directory / IMAGES_DIR).is_dir() and all(
        (directory / name).is_file() for name in files
    )


def _is_replaceable(directory: Path) -> bool:
    """Only replace what this module made (or nothing), never a user's data."""
    return (directory / SPEC_FILE).is_file() or not any(directory.iterdir())


def generate_dataset(out_dir: Path | str, spec: SyntheticConfig = SyntheticConfig()) -> dict:
    """Write the dataset of ``spec`` into ``out_dir``; return its summary.

    Atomic: everything is written into a temporary sibling directory that is
    renamed into place once complete, so readers never see half a dataset.
    Idempotent: a directory already made from the same spec is reused as is;
    one made from another spec is replaced. A non-empty directory that this
    module did not make raises ``FileExistsError`` rather than being deleted.
    """
    out_dir = Path(out_dir)
    if _is_complete(out_dir, spec):
        return _summary(out_dir)
    if out_dir.exists() and not (out_dir.is_dir() and _is_replaceable(out_dir)):
        raise FileExistsError(f"{out_dir} exists and was not made by data.synthetic; not replacing it")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        _write_dataset(staging, spec)
        if out_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
            os.replace(out_dir, old / "dataset")
            try:
                os.replace(staging, out_dir)
            except OSError:
                if not out_dir.exists():  # put the previous dataset back
                    os.replace(old / "dataset", out_dir)
                raise
            finally:
                shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, out_dir)
    except OSError:
        # A concurrent run may have put the same dataset in place first.
        if _is_complete(out_dir, spec):
            return _summary(out_dir)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return _summary(out_dir)


# --------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
    """The CLI's parser, separate from ``main`` so other options can be added."""
    defaults = SyntheticConfig()
    parser = argparse.ArgumentParser(
        prog="python -m data.synthetic",
        description=(
            "Write a small, deterministic synthetic image-caption dataset (one coloured "
            "circle, square or triangle per image, five captions each) in the Flickr8k "
            "release layout. Re-running with the same options leaves the directory as is."
        ),
    )
    parser.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="directory to write the dataset into (replaced if made from other options)",
    )
    parser.add_argument(
        "--num-images",
        type=int,
        default=defaults.num_images,
        metavar="N",
        help=f"number of images to draw (default: {defaults.num_images})",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=defaults.seed,
        metavar="S",
        help=f"random seed; the same seed gives byte-identical files (default: {defaults.seed})",
    )
    parser.add_argument(
        "--profile",
        metavar="NAME",
        help="take the directory and the spec from a config profile (e.g. smoke)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, write the dataset and print its summary as JSON."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.profile:
        from configs import load_config

        config = load_config(args.profile)
        args.out = args.out or config.data_dir
        spec = config.data.synthetic
    else:
        try:
            spec = SyntheticConfig(num_images=args.num_images, seed=args.seed)
        except ValueError as error:
            parser.error(str(error))
    if args.out is None:
        parser.error("--out DIR or --profile is required")
    summary = generate_dataset(args.out, spec)
    print(json.dumps(summary, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())

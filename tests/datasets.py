"""Test datasets: a synthetic Flickr8k-layout directory, and small ways to damage it.

`make_dataset` writes a clean dataset with `data.synthetic`; every other helper changes
one thing in it the way real downloads go wrong (a corrupt or truncated JPEG, a caption
line in a bad encoding, a split file listing an image twice ...). The expected values
(captions, sizes, split membership) come from the generator's plan, not from the code
under test, so the tests compare against an independent answer.
"""

from __future__ import annotations

import random
from pathlib import Path

from data import layout, synthetic
from configs.config import SyntheticConfig


def make_dataset(tmp_path: Path, num_images: int = 40, seed: int = 1) -> Path:
    """A clean synthetic dataset in `tmp_path/flickr8k`; returns its root."""
    root = Path(tmp_path) / "flickr8k"
    synthetic.generate_dataset(root, SyntheticConfig(num_images=num_images, seed=seed))
    return root


def planned(num_images: int = 40, seed: int = 1) -> dict[str, synthetic.ImageRecord]:
    """What the generator drew for this spec, by image id (sizes, attributes)."""
    spec = SyntheticConfig(num_images=num_images, seed=seed)
    return {record.image_id: record for record in synthetic.plan_dataset(spec)}


def expected_captions(num_images: int = 40, seed: int = 1) -> dict[str, list[str]]:
    """The five captions of every image, in their #0..#4 order."""
    return {
        image_id: synthetic.describe(record.attributes)
        for image_id, record in planned(num_images, seed).items()
    }


def split_ids(root: Path, split: str) -> list[str]:
    """Image ids listed in a split file, in file order (read without data.layout)."""
    path = Path(root) / layout.SPLIT_FILES[split]
    return [line.strip()[: -len(".jpg")] for line in path.read_text().splitlines() if line.strip()]


def image_path(root: Path, image_id: str) -> Path:
    return Path(root) / layout.IMAGE_DIR / f"{image_id}.jpg"


def corrupt_image(root: Path, image_id: str, seed: int = 0) -> None:
    """Replace the image with random bytes of about the same length."""
    path = image_path(root, image_id)
    size = max(path.stat().st_size, 64)
    path.write_bytes(random.Random(seed).randbytes(size))


def truncate_image(root: Path, image_id: str) -> None:
    """Keep the first half of the JPEG, as an interrupted download would."""
    path = image_path(root, image_id)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def remove_image(root: Path, image_id: str) -> None:
    image_path(root, image_id).unlink()


def _token_path(root: Path) -> Path:
    return Path(root) / layout.TOKEN_FILE


def _token_lines(root: Path) -> list[bytes]:
    return _token_path(root).read_bytes().splitlines()


def _write_token_lines(root: Path, lines: list[bytes]) -> None:
    _token_path(root).write_bytes(b"".join(line + b"\n" for line in lines))


def insert_caption_line(root: Path, raw: bytes, index: int) -> None:
    """Put the raw bytes `raw` in as line `index` (0-based) of the captions file."""
    lines = _token_lines(root)
    lines.insert(index, raw)
    _write_token_lines(root, lines)


def append_caption_line(root: Path, raw: bytes) -> None:
    """Add the raw bytes `raw` as the last line of the captions file."""
    _write_token_lines(root, _token_lines(root) + [raw])


def remove_captions(root: Path, image_id: str) -> int:
    """Delete every caption line of one image; returns how many were removed."""
    prefix = f"{image_id}.jpg#".encode()
    lines = _token_lines(root)
    kept = [line for line in lines if not line.startswith(prefix)]
    _write_token_lines(root, kept)
    return len(lines) - len(kept)


def reverse_captions(root: Path, image_id: str) -> None:
    """Write one image's caption lines in reverse file order (#4 first)."""
    prefix = f"{image_id}.jpg#".encode()
    lines = _token_lines(root)
    positions = [i for i, line in enumerate(lines) if line.startswith(prefix)]
    reordered = [lines[i] for i in reversed(positions)]
    for i, line in zip(positions, reordered):
        lines[i] = line
    _write_token_lines(root, lines)


def add_split_entry(root: Path, split: str, name: str) -> None:
    """Append `name` (e.g. `<id>.jpg`) as a line of a split file."""
    path = Path(root) / layout.SPLIT_FILES[split]
    text = path.read_text()
    if text and not text.endswith("\n"):
        text += "\n"
    path.write_text(text + name + "\n")


def remove_split_file(root: Path, split: str) -> None:
    (Path(root) / layout.SPLIT_FILES[split]).unlink()

"""Tests of data/synthetic.py: layout, determinism and that captions match pixels."""

from __future__ import annotations

import hashlib
import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data import synthetic
from data.synthetic import (
    CAPTIONS_PER_IMAGE,
    IMAGES_DIR,
    PALETTE,
    SPEC_FILE,
    SPLIT_FILES,
    TOKEN_FILE,
    ImageAttributes,
    SyntheticConfig,
    describe,
    draw,
    generate_dataset,
    plan_dataset,
    shape_center,
)

SPEC = SyntheticConfig()  # the defaults: 60 images, seed 0
# JPEG at quality 90 plus light grain moves flat colours by a few levels only.
COLOR_TOLERANCE = 40


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("synthetic") / "flickr8k"
    return out, generate_dataset(out, SPEC)


def _read_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def _captions_by_image(root: Path) -> dict[str, list[tuple[int, str]]]:
    captions: dict[str, list[tuple[int, str]]] = {}
    for line in _read_lines(root / TOKEN_FILE):
        key, caption = line.split("\t")
        filename, n = key.split("#")
        captions.setdefault(filename, []).append((int(n), caption))
    return captions


def _tree_hashes(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def _near(pixel: np.ndarray, color: str) -> bool:
    return bool(np.all(np.abs(pixel.astype(int) - np.array(PALETTE[color])) <= COLOR_TOLERANCE))


# ---------------------------------------------------------------- layout


def test_layout_has_the_flickr8k_release_files(dataset: tuple[Path, dict]) -> None:
    root, summary = dataset
    assert (root / IMAGES_DIR).is_dir()
    assert IMAGES_DIR == "Flicker8k_Dataset"  # the release's own misspelling
    for name in (TOKEN_FILE, *SPLIT_FILES.values(), SPEC_FILE):
        assert (root / name).is_file(), name
    assert sorted(SPLIT_FILES.values()) == sorted(
        ["Flickr_8k.trainImages.txt", "Flickr_8k.devImages.txt", "Flickr_8k.testImages.txt"]
    )
    images = sorted(p.name for p in (root / IMAGES_DIR).iterdir())
    assert len(images) == SPEC.num_images
    assert all(re.fullmatch(r"\d{10}_[0-9a-f]{10}\.jpg", name) for name in images)
    assert summary["num_images"] == SPEC.num_images
    assert summary["num_captions"] == SPEC.num_images * CAPTIONS_PER_IMAGE
    assert summary["splits"] == {"train": 42, "dev": 9, "test": 9}
    assert json.loads((root / SPEC_FILE).read_text())["seed"] == SPEC.seed
    # No staging directories are left next to the dataset.
    assert [p.name for p in root.parent.iterdir()] == [root.name]


def test_every_image_has_exactly_five_captions(dataset: tuple[Path, dict]) -> None:
    root, _ = dataset
    captions = _captions_by_image(root)
    assert set(captions) == {p.name for p in (root / IMAGES_DIR).iterdir()}
    for filename, entries in captions.items():
        assert [n for n, _ in entries] == list(range(CAPTIONS_PER_IMAGE)), filename
        assert len({caption for _, caption in entries}) == CAPTIONS_PER_IMAGE, filename


def test_captions_are_release_style_with_lowercase_letter_words(dataset: tuple[Path, dict]) -> None:
    root, _ = dataset
    for entries in _captions_by_image(root).values():
        for _, caption in entries:
            # "A red circle on a blue background ." - sentence case, spaced full stop.
            assert re.fullmatch(r"[A-Z][a-z]*( [a-z]+)* \.", caption), caption


def test_split_files_partition_the_images(dataset: tuple[Path, dict]) -> None:
    root, _ = dataset
    splits = {name: _read_lines(root / filename) for name, filename in SPLIT_FILES.items()}
    everything = {p.name for p in (root / IMAGES_DIR).iterdir()}
    for name, ids in splits.items():
        assert len(ids) == len(set(ids)), name
    assert not set(splits["train"]) & set(splits["dev"])
    assert not set(splits["train"]) & set(splits["test"])
    assert not set(splits["dev"]) & set(splits["test"])
    assert set().union(*splits.values()) == everything


@pytest.mark.parametrize(
    ("n", "fractions", "expected"),
    [
        (60, (0.7, 0.15, 0.15), [42, 9, 9]),
        (10, (0.7, 0.15, 0.15), [7, 2, 1]),
        (3, (0.7, 0.15, 0.15), [1, 1, 1]),
        (5, (1.0, 0.0, 0.0), [5, 0, 0]),
    ],
)
def test_split_counts_follow_fractions(n: int, fractions: tuple, expected: list[int]) -> None:
    counts = synthetic.split_counts(n, fractions)
    assert counts == expected
    assert sum(counts) == n


# ---------------------------------------------------------------- determinism


def test_same_spec_gives_identical_bytes(dataset: tuple[Path, dict], tmp_path: Path) -> None:
    root, _ = dataset
    again = tmp_path / "again"
    generate_dataset(again, SPEC)
    assert _tree_hashes(again) == _tree_hashes(root)


def test_different_seed_gives_different_data(dataset: tuple[Path, dict], tmp_path: Path) -> None:
    root, _ = dataset
    other = tmp_path / "other"
    generate_dataset(other, SyntheticConfig(seed=1))
    ours, theirs = _tree_hashes(root), _tree_hashes(other)
    assert (root / TOKEN_FILE).read_bytes() != (other / TOKEN_FILE).read_bytes()
    assert set(ours) != set(theirs)  # the ids themselves depend on the seed


def test_rerun_with_same_spec_does_not_rewrite(tmp_path: Path) -> None:
    out = tmp_path / "data"
    spec = SyntheticConfig(num_images=6)
    first = generate_dataset(out, spec)
    marker = out / "marker"
    marker.write_text("kept")
    assert generate_dataset(out, spec) == first
    assert marker.exists()


def test_rerun_with_other_spec_replaces(tmp_path: Path) -> None:
    out = tmp_path / "data"
    generate_dataset(out, SyntheticConfig(num_images=6))
    (out / "marker").write_text("stale")
    summary = generate_dataset(out, SyntheticConfig(num_images=8, seed=3))
    assert summary["num_images"] == 8
    assert not (out / "marker").exists()
    assert len(list((out / IMAGES_DIR).iterdir())) == 8
    assert json.loads((out / SPEC_FILE).read_text())["seed"] == 3
    assert [p.name for p in tmp_path.iterdir()] == ["data"]


def test_refuses_to_replace_a_foreign_directory(tmp_path: Path) -> None:
    out = tmp_path / "data"
    out.mkdir()
    (out / "precious.txt").write_text("not ours")
    with pytest.raises(FileExistsError):
        generate_dataset(out, SyntheticConfig(num_images=3))
    assert (out / "precious.txt").exists()


def test_spec_validation() -> None:
    with pytest.raises(ValueError):
        SyntheticConfig(split_fractions=(0.5, 0.2, 0.2))
    with pytest.raises(ValueError):
        SyntheticConfig(num_images=0)
    with pytest.raises(ValueError):
        SyntheticConfig(min_size=200, max_size=100)
    assert SyntheticConfig(split_fractions=[0.7, 0.15, 0.15]) == SyntheticConfig()


# ---------------------------------------------------------------- captions vs pixels


def test_captions_mention_shape_colour_and_background(dataset: tuple[Path, dict]) -> None:
    root, _ = dataset
    captions = _captions_by_image(root)
    shape_words = {
        "circle": {"circle", "ball", "round"},
        "square": {"square", "block"},
        "triangle": {"triangle", "triangular"},
    }
    for record in plan_dataset(SPEC):
        attributes = record.attributes
        written = [caption for _, caption in captions[record.filename]]
        assert written == describe(attributes)
        for caption in written:
            words = caption.lower().rstrip(" .").split()
            assert attributes.color in words, caption
            assert attributes.background in words, caption
            # The shape colour comes before the background colour.
            assert words.index(attributes.color) < words.index(attributes.background), caption
            assert shape_words[attributes.shape] & set(words), caption
            other_colors = set(PALETTE) - {attributes.color, attributes.background}
            assert not other_colors & set(words), caption
            if "small" in words:
                assert attributes.size == "small", caption
            if {"big", "large"} & set(words):
                assert attributes.size == "large", caption


def test_describe_is_pure_and_names_what_is_drawn() -> None:
    attributes = ImageAttributes(shape="circle", color="red", background="blue", size="small")
    captions = describe(attributes)
    assert captions == describe(attributes)
    assert len(captions) == CAPTIONS_PER_IMAGE
    assert captions[0] == "A red circle on a blue background ."
    assert "A small red ball against blue ." in captions


def test_attributes_reject_invisible_shapes() -> None:
    with pytest.raises(ValueError):
        ImageAttributes(shape="circle", color="red", background="red", size="small")
    with pytest.raises(ValueError):
        ImageAttributes(shape="hexagon", color="red", background="blue", size="small")


def test_draw_is_pure() -> None:
    attributes = ImageAttributes(
        shape="triangle", color="yellow", background="black", size="large",
        offset=(0.3, -0.5), noise=6.0, noise_seed=7,
    )
    first, second = draw(attributes, (150, 100)), draw(attributes, (150, 100))
    assert first.size == (150, 100) and first.mode == "RGB"
    assert np.array_equal(np.asarray(first), np.asarray(second))


def test_images_decode_with_varied_sizes(dataset: tuple[Path, dict]) -> None:
    root, _ = dataset
    sizes = set()
    for record in plan_dataset(SPEC):
        with Image.open(root / IMAGES_DIR / record.filename) as image:
            assert image.format == "JPEG"
            assert image.mode == "RGB"
            assert image.size == record.size
            image.load()
        width, height = image.size
        assert SPEC.min_size <= width <= SPEC.max_size
        assert SPEC.min_size <= height <= SPEC.max_size
        sizes.add(image.size)
    assert len(sizes) > SPEC.num_images // 2
    assert any(width != height for width, height in sizes)


def test_pixels_show_the_described_colours(dataset: tuple[Path, dict]) -> None:
    root, _ = dataset
    for record in plan_dataset(SPEC):
        with Image.open(root / IMAGES_DIR / record.filename) as image:
            pixels = np.asarray(image.convert("RGB"))
        cx, cy = shape_center(record.attributes, record.size)
        assert _near(pixels[int(cy), int(cx)], record.attributes.color), record
        height, width, _ = pixels.shape
        for y, x in ((0, 0), (0, width - 1), (height - 1, 0), (height - 1, width - 1)):
            assert _near(pixels[y, x], record.attributes.background), (record, (x, y))


def test_attributes_are_balanced() -> None:
    records = plan_dataset(SPEC)
    for name, values in (
        ("shape", synthetic.SHAPES),
        ("color", synthetic.COLORS),
        ("size", synthetic.SIZES),
    ):
        counts = [sum(getattr(r.attributes, name) == v for r in records) for v in values]
        assert max(counts) - min(counts) <= 1, (name, counts)


# ---------------------------------------------------------------- speed and CLI


def test_sixty_images_take_under_five_seconds(tmp_path: Path) -> None:
    start = time.perf_counter()
    generate_dataset(tmp_path / "timed", SyntheticConfig(num_images=60, seed=5))
    assert time.perf_counter() - start < 5.0


def test_main_writes_the_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    assert synthetic.main(["--out", str(out), "--num-images", "5", "--seed", "3"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["num_images"] == 5
    assert summary["num_captions"] == 25
    assert json.loads((out / SPEC_FILE).read_text())["num_images"] == 5


def test_main_requires_out(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        synthetic.main([])
    assert exit_info.value.code == 2
    assert "--out" in capsys.readouterr().err


def test_profile_option_takes_the_spec_from_the_config(tmp_path: Path) -> None:
    from configs import load_config

    out = tmp_path / "from_profile"
    assert synthetic.main(["--profile", "smoke", "--out", str(out)]) == 0
    expected = load_config("smoke").data.synthetic.num_images
    assert len(list((out / synthetic.IMAGES_DIR).glob("*.jpg"))) == expected
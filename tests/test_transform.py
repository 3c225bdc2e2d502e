"""Tests of components/transform: caption normalisation, vocabulary and token ids.

The preprocessing_fn runs under tf.Transform's Beam implementation (in process) on a few
hand-written images: analysed on a "train" set, applied to it and to a "dev" set that was
not analysed, and the transform fn is written to disk and read back with
TFTransformOutput, as the Trainer will. Two such runs in all (module-scoped fixtures): the
main one (min_count=2) and one with the curated schema's shape-less `image_id` plus an
`image/grid`. Expected words are written out by hand, not computed by the code under test.
"""

from __future__ import annotations

import os
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
warnings.filterwarnings("ignore", category=FutureWarning)

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_transform as tft  # noqa: E402
import tensorflow_transform.beam as tft_beam  # noqa: E402
from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils  # noqa: E402

from components.transform import preprocessing  # noqa: E402
from models import text, vocabulary  # noqa: E402

MAX_LENGTH = 8  # <start> + at most 6 words + <end>
MIN_COUNT = 2

FEATURE_SPEC = {
    "image_id": tf.io.FixedLenFeature([], tf.string),
    "captions": tf.io.VarLenFeature(tf.string),
    "image/features": tf.io.FixedLenFeature([4], tf.float32),
}

# (raw caption, its words after normalisation and truncation to MAX_LENGTH - 2)
IMAGE_1 = [
    ("A dog, 2 cats & a café!!", "a dog cats a caf"),
    ("A dog runs on the grass .", "a dog runs on the grass"),
    ("The  DOG\truns.", "the dog runs"),
    ("a cat sits on the grass", "a cat sits on the grass"),
    ("Zebra on the grass", "zebra on the grass"),
]
IMAGE_2 = [
    ("A dog and a cat", "a dog and a cat"),
    ("the dog runs on the grass and a cat sits", "the dog runs on the grass"),  # cut
    ("Cats play in the CAFÉ", "cats play in the caf"),
]
IMAGE_3 = [
    ("!!! 123 ...", ""),  # nothing left: <start> <end>
    ("a dog", "a dog"),
]
TRAIN = {b"img1": IMAGE_1, b"img2": IMAGE_2, b"img3": IMAGE_3}
FEATURES = {
    b"img1": [0.5, -1.0, 2.25, 0.0],
    b"img2": [1.0, 2.0, 3.0, 4.0],
    b"img3": [-0.125, 0.0, 1e-3, 7.0],
    b"dev1": [9.0, 8.0, 7.0, 6.0],
}
# "giraffe" is frequent in dev but never analysed.
DEV = {b"dev1": [("a giraffe on the grass", "a giraffe on the grass"),
                 ("Giraffe, giraffe, GIRAFFE!", "giraffe giraffe giraffe")]}


def _instances(images: dict[bytes, list[tuple[str, str]]]) -> list[dict[str, Any]]:
    return [
        {
            "image_id": image_id,
            "captions": [raw.encode("utf-8") for raw, _ in caps],
            "image/features": FEATURES[image_id],
        }
        for image_id, caps in images.items()
    ]


def _expected_counts() -> Counter:
    return Counter(w for caps in TRAIN.values() for _, words in caps for w in words.split())


@dataclass(frozen=True)
class Run:
    train: dict[bytes, dict[str, Any]]  # transformed, by image_id
    dev: dict[bytes, dict[str, Any]]
    output: tft.TFTransformOutput


def _run(
    tmp: Path,
    feature_spec: dict[str, Any],
    train: list[dict[str, Any]],
    dev: list[dict[str, Any]],
    config: dict[str, int],
) -> Run:
    metadata = dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(feature_spec))

    def preprocessing_fn(inputs):
        return preprocessing.preprocessing_fn(inputs, custom_config=config)

    out_dir = str(tmp / "transform_output")
    with tft_beam.Context(temp_dir=str(tmp / "tft_tmp")):
        transform_fn = (train, metadata) | tft_beam.AnalyzeDataset(preprocessing_fn)
        transformed_train, _ = ((train, metadata), transform_fn) | tft_beam.TransformDataset()
        transformed_dev, _ = ((dev, metadata), transform_fn) | tft_beam.TransformDataset()
        _ = transform_fn | tft_beam.WriteTransformFn(out_dir)
    return Run(
        train={row["image_id"]: row for row in transformed_train},
        dev={row["image_id"]: row for row in transformed_dev},
        output=tft.TFTransformOutput(out_dir),
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return _run(
        tmp_path_factory.mktemp("transform"),
        FEATURE_SPEC,
        _instances(TRAIN),
        _instances(DEV),
        {"min_count": MIN_COUNT, "max_length": MAX_LENGTH},
    )


@pytest.fixture(scope="module")
def vocab(run: Run) -> list[str]:
    return vocabulary.load_vocabulary(run.output)


def _captions(row: dict[str, Any]) -> np.ndarray:
    return np.asarray(row["caption_ids"]).reshape(-1, MAX_LENGTH)


def _expected_ids(words: str, vocab: list[str]) -> list[int]:
    unk = len(vocab) - 1
    ids = [vocab.index(w) if w in vocab[1:-1] else unk for w in words.split()]
    ids = [vocab.index(text.START), *ids, vocab.index(text.END)]
    return ids + [0] * (MAX_LENGTH - len(ids))


# --- text.py -------------------------------------------------------------------------

TRICKY = [
    "A dog runs on the grass .",
    "A dog, 2 cats & a café!!",
    "  multiple   spaces\tand\ttabs\nand newlines  ",
    "UPPER lower MiXeD",
    "naïve façade Ærø ÉCOLE",
    "\u017f \u212a \u0130",  # long s, Kelvin sign, dotted I: lower() would make ASCII
    "don't-stop e-mail 1990s",
    "",
    "   ",
    "!!!",
    "a\u00a0b\u2003c\u200bd",  # no-break, em and zero-width spaces
    "日本語 text 🐕 emoji",
    "x\x00y\x7fz",
]


def test_normalize_text_examples() -> None:
    assert text.normalize_text("A dog, 2 cats & a café!!") == "a dog cats a caf"
    assert text.normalize_text("The  DOG\truns.\n") == "the dog runs"
    assert text.normalize_text("naïve") == "na ve"
    assert text.normalize_text("don't") == "don t"
    assert text.normalize_text("\u212a") == ""  # the Kelvin sign is not the letter k
    assert text.normalize_text(" 42 !") == ""
    assert text.tokenize_text("A  b\tc") == ["a", "b", "c"]


def test_tf_and_python_normalisation_agree() -> None:
    got = [s.decode("utf-8") for s in text.normalize(tf.constant(TRICKY)).numpy().tolist()]
    assert got == [text.normalize_text(s) for s in TRICKY]


def test_tokenize_is_ragged_over_any_batch_shape() -> None:
    tokens = text.tokenize(text.normalize(tf.constant([["A b", ""], ["c, d e", "F"]])))
    assert isinstance(tokens, tf.RaggedTensor)
    assert tokens.to_list() == [[[b"a", b"b"], []], [[b"c", b"d", b"e"], [b"f"]]]


# --- preprocessing_fn under tf.Transform ---------------------------------------------


def test_vocabulary_is_reserved_tokens_then_frequent_words(vocab: list[str]) -> None:
    counts = _expected_counts()
    frequent = {w for w, c in counts.items() if c >= MIN_COUNT}
    assert vocab[0] == text.PAD and vocab[-1] == text.UNK
    assert vocab[1:3] == [text.START, text.END]
    assert set(vocab[3:-1]) == frequent
    # Most frequent first.
    assert [counts[w] for w in vocab[3:-1]] == sorted((counts[w] for w in frequent), reverse=True)
    assert vocabulary.special_ids(vocab) == {"pad": 0, "start": 1, "end": 2, "unk": len(vocab) - 1}
    # "sits" occurs twice, but once in the part of a caption that truncation cut: the
    # vocabulary counts words after truncation, so it is rare.
    assert "sits" not in vocab and "zebra" not in vocab and "grass" in vocab


def test_caption_ids_are_wrapped_padded_and_mapped(run: Run, vocab: list[str]) -> None:
    for image_id, caps in TRAIN.items():
        row = run.train[image_id]
        assert row["num_captions"] == len(caps)
        assert len(row["caption_ids"]) == len(caps) * MAX_LENGTH
        got = _captions(row)
        for i, (raw, words) in enumerate(caps):
            assert got[i].tolist() == _expected_ids(words, vocab), raw


def test_normalised_words_come_back_through_the_vocabulary(run: Run, vocab: list[str]) -> None:
    first = _captions(run.train[b"img1"])[0].tolist()
    assert [vocab[i] for i in first] == ["<start>", "a", "dog", "cats", "a", "caf", "<end>", ""]
    assert vocabulary.decode(first, vocab) == "a dog cats a caf"
    # Only punctuation and digits: an empty caption, <start> <end> then padding.
    assert _captions(run.train[b"img3"])[0].tolist() == [1, 2, 0, 0, 0, 0, 0, 0]


def test_rare_words_become_unk_and_frequent_ones_keep_their_ids(run: Run, vocab: list[str]) -> None:
    unk = len(vocab) - 1
    zebra = _captions(run.train[b"img1"])[4].tolist()
    assert zebra[1] == unk
    assert [vocab[i] for i in zebra[2:5]] == ["on", "the", "grass"]
    assert vocabulary.decode(zebra, vocab) == "<unk> on the grass"


def test_long_captions_are_cut_and_still_end_with_end(run: Run, vocab: list[str]) -> None:
    cut = _captions(run.train[b"img2"])[1].tolist()
    assert len(cut) == MAX_LENGTH and cut[0] == 1 and cut[-1] == 2 and 0 not in cut
    assert vocabulary.decode(cut, vocab) == "the dog runs on the grass"


def test_three_five_and_two_captions(run: Run) -> None:
    assert {k: int(v["num_captions"]) for k, v in run.train.items()} == {
        b"img1": 5,
        b"img2": 3,
        b"img3": 2,
    }


def test_image_id_and_features_pass_through(run: Run) -> None:
    for image_id, row in {**run.train, **run.dev}.items():
        assert row["image_id"] == image_id
        np.testing.assert_array_equal(row["image_features"], np.float32(FEATURES[image_id]))


def test_words_seen_only_outside_the_analysed_split_are_unk(run: Run, vocab: list[str]) -> None:
    assert "giraffe" not in vocab
    unk = len(vocab) - 1
    dev = _captions(run.dev[b"dev1"])
    assert dev[1].tolist() == [1, unk, unk, unk, 2, 0, 0, 0]
    assert vocabulary.decode(dev[0].tolist(), vocab) == "a <unk> on the grass"


def test_transformed_feature_spec_is_what_the_trainer_reads(run: Run) -> None:
    assert run.output.transformed_feature_spec() == {
        "caption_ids": tf.io.VarLenFeature(tf.int64),
        "num_captions": tf.io.FixedLenFeature([], tf.int64),
        "image_id": tf.io.FixedLenFeature([], tf.string),
        "image_features": tf.io.FixedLenFeature([4], tf.float32),
    }
    path = vocabulary.vocabulary_file(run.output)
    assert Path(path).read_text().split("\n")[:2] == [text.START, text.END]


def test_curated_schema_image_id_and_grid(tmp_path_factory: pytest.TempPathFactory) -> None:
    """data/schema gives image_id no shape (it arrives sparse); image/grid passes through."""
    spec = {**FEATURE_SPEC, "image_id": tf.io.VarLenFeature(tf.string),
            "image/grid": tf.io.FixedLenFeature([6], tf.float32)}
    grid = {b"img1": [1.0] * 6, b"img2": list(map(float, range(6)))}

    def with_grid(rows):
        return [{**r, "image_id": [r["image_id"]], "image/grid": grid[r["image_id"]]} for r in rows]

    train = with_grid(_instances({b"img1": IMAGE_1, b"img2": IMAGE_2}))
    result = _run(
        tmp_path_factory.mktemp("transform_grid"),
        spec,
        train,
        train[1:],
        {"min_count": 1, "max_length": 5},
    )
    spec_out = result.output.transformed_feature_spec()
    assert spec_out["image_id"] == tf.io.FixedLenFeature([], tf.string)
    assert spec_out["image_grid"] == tf.io.FixedLenFeature([6], tf.float32)
    row = result.train[b"img2"]
    np.testing.assert_array_equal(row["image_grid"], np.float32(grid[b"img2"]))
    vocab = vocabulary.load_vocabulary(result.output)
    assert "zebra" in vocab and "sits" in vocab  # min_count=1 keeps every word
    ids = np.asarray(row["caption_ids"]).reshape(-1, 5)
    decoded = [vocabulary.decode(c, vocab) for c in ids.tolist()]
    assert decoded == ["a dog and", "the dog runs", "cats play in"]
    assert result.dev[b"img2"]["caption_ids"].tolist() == row["caption_ids"].tolist()


def test_custom_config_is_checked() -> None:
    with pytest.raises(ValueError, match="max_length"):
        preprocessing.preprocessing_fn({}, custom_config={"min_count": 1})
    with pytest.raises(ValueError, match=">= 3"):
        preprocessing.preprocessing_fn({}, custom_config={"min_count": 1, "max_length": 2})

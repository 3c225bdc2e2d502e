"""BleuEvaluator's pure parts (components/bleu_evaluator/evaluate.py), without TFX or a model."""

from __future__ import annotations

import logging

import pytest
import tensorflow as tf

from components.bleu_evaluator import evaluate
from components.flickr8k_example_gen.records import build_example
from models.coco_caption import COCO_METRICS

IMAGES = {
    "img_a": ("A red ball on blue .", "A small red ball against blue ."),
    "img_b": ("A green square on white .", "A big green box on white .", "Green square , white background ."),
    "img_c": ("A yellow triangle on black .",),
}


@pytest.fixture
def split_dir(tmp_path):
    directory = tmp_path / "Split-dev"
    directory.mkdir()
    for shard, ids in enumerate((["img_a", "img_b"], ["img_c"])):
        path = directory / f"data_tfrecord-0000{shard}-of-00002.gz"
        with tf.io.TFRecordWriter(str(path), options="GZIP") as writer:
            for image_id in ids:
                example = build_example(image_id, f"bytes of {image_id}".encode(), 8, 8, IMAGES[image_id])
                writer.write(example.SerializeToString())
    return directory


def echo_first_reference(batch_of_images):
    """A perfect captioner: answers the first reference of the image whose bytes it gets."""
    return [IMAGES[image.decode().removeprefix("bytes of ")][0] for image in batch_of_images]


def test_examples_stream_in_batches_with_bytes_and_every_reference(split_dir):
    files = evaluate.split_files(str(split_dir))
    assert evaluate.count_examples(files) == 3
    batches = list(evaluate.read_batches(files, batch_size=2))
    assert [b.image_ids for b in batches] == [["img_a", "img_b"], ["img_c"]]
    assert batches[0].images == [b"bytes of img_a", b"bytes of img_b"]
    assert batches[0].references == [list(IMAGES["img_a"]), list(IMAGES["img_b"])]  # 2 and 3 captions


def test_a_split_without_files_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no \\*.gz TFRecord files"):
        evaluate.split_files(str(tmp_path))


def test_perfect_captions_score_1_and_every_image_gets_one_prediction(split_dir, caplog):
    files = evaluate.split_files(str(split_dir))
    with caplog.at_level(logging.INFO, logger=evaluate.__name__):
        result = evaluate.evaluate(evaluate.read_batches(files, 2), echo_first_reference, total=3, name="m")
    for n in (1, 2, 3, 4):
        assert result.metrics[f"bleu_{n}"] == pytest.approx(1.0)
    assert result.metrics["num_images"] == 3
    assert result.metrics["images_per_second"] > 0
    assert [p["image_id"] for p in result.predictions] == ["img_a", "img_b", "img_c"]
    assert result.predictions[1] == {
        "image_id": "img_b", "caption": IMAGES["img_b"][0], "references": list(IMAGES["img_b"])
    }
    assert "m: captioned 3/3 images (100%)" in caplog.text and "images/s" in caplog.text


def test_wrong_captions_score_low(split_dir):
    files = evaluate.split_files(str(split_dir))
    result = evaluate.evaluate(evaluate.read_batches(files, 2), lambda images: ["xyzzy"] * len(images), total=3)
    assert result.metrics["bleu_4"] < 0.01 and result.metrics["bleu_1"] < 0.01


def test_a_captioner_that_drops_images_is_an_error(split_dir):
    files = evaluate.split_files(str(split_dir))
    with pytest.raises(ValueError, match="1 captions for 2 images"):
        evaluate.evaluate(evaluate.read_batches(files, 2), lambda images: ["a"], total=3)


def test_duplicate_image_ids_are_an_error():
    batch = evaluate.Batch(["x", "x"], [b"1", b"2"], [["a"], ["a"]])
    with pytest.raises(ValueError, match="'x' appears twice"):
        evaluate.evaluate(iter([batch]), lambda images: ["a", "a"], total=2)


def test_without_the_coco_caption_scorer_meteor_is_none_with_the_reason(split_dir):
    files = evaluate.split_files(str(split_dir))
    result = evaluate.evaluate(evaluate.read_batches(files, 2), lambda images: ["a dog"] * len(images), total=3)
    assert result.metrics["meteor"] is None
    assert "METEOR was skipped" in result.metrics["meteor_skipped_reason"] and "gate.coco_caption" in result.metrics["meteor_skipped_reason"]
    assert not any(k.startswith("coco_") for k in result.metrics)


def test_the_coco_caption_scorer_adds_its_scores_beside_the_projects(split_dir):
    files = evaluate.split_files(str(split_dir))
    perfect = evaluate.evaluate(evaluate.read_batches(files, 2), echo_first_reference, total=3, coco_caption=True)
    m = perfect.metrics
    assert set(COCO_METRICS) <= set(m) and m["meteor_skipped_reason"] is None
    # The project's gate scores are untouched by the second scorer.
    assert perfect.scores.keys() == {"bleu_1", "bleu_2", "bleu_3", "bleu_4", "cider"}
    # Each caption is one of its image's references: every coco-caption score is at its top.
    assert m["coco_bleu_4"] > 0.99 and m["meteor"] > 0.9 and m["coco_rouge_l"] > 0.99


def test_cider_rewards_the_caption_that_matches_its_own_image_and_ignores_case_and_punctuation():
    from models.metrics import corpus_cider

    references = {
        "dog": ["A dog runs on the grass.", "a brown dog running", "the dog runs in a field"],
        "bike": ["A man rides a bike.", "a person on a bicycle", "man riding his bike on a road"],
        "beach": ["Children play on the beach.", "kids at the sea", "two children on the sand"],
    }
    right = {"dog": "a dog runs on the grass", "bike": "a man rides a bike", "beach": "children play on the beach"}
    swapped = {"dog": right["bike"], "bike": right["beach"], "beach": right["dog"]}
    shouted = {k: v.upper() + "!" for k, v in right.items()}
    assert corpus_cider(right, references) > 1.0
    assert corpus_cider(swapped, references) < 0.2
    assert corpus_cider(shouted, references) == pytest.approx(corpus_cider(right, references))

"""BLEU-1..4 and CIDEr pinned to figures computed by hand (or by the library called directly).

Each expected BLEU is written as NLTK's corpus formula over n-gram counts worked out by
hand below: brevity penalty exp(1 - r/c) times the geometric mean of the clipped
precisions. A different weighting, smoothing or tokenisation changes these numbers.
No TensorFlow here: BLEU needs only the Python twin of the caption normalisation.
"""

from __future__ import annotations

import math

import pytest

from models.metrics import corpus_bleu_scores, corpus_cider
from models.text import tokenize_text as tokens

DOG_REF = "A dog runs on the grass ."


def test_one_partly_matching_caption():
    # hyp "a dog runs on grass" (5 words) against "a dog runs on the grass" (6):
    # unigrams 5/5, bigrams 3/4 (not "on grass"), trigrams 2/3, 4-grams 1/2; c=5, r=6.
    scores = corpus_bleu_scores({"img": "A dog runs on grass"}, {"img": [DOG_REF]})
    bp = math.exp(1 - 6 / 5)
    assert scores == pytest.approx(
        {
            "bleu_1": bp * 1.0,
            "bleu_2": bp * (1.0 * 3 / 4) ** (1 / 2),
            "bleu_3": bp * (1.0 * 3 / 4 * 2 / 3) ** (1 / 3),
            "bleu_4": bp * (1.0 * 3 / 4 * 2 / 3 * 1 / 2) ** (1 / 4),
        },
        rel=1e-9,
    )


def test_corpus_counts_are_pooled_clipped_and_use_the_closest_reference_length():
    # Image "cat": hyp "the the the cat"; "the" is clipped to 2 (its most in one reference),
    # so unigrams 3/4, bigrams 1/3 ("the cat"), trigrams 0/2, 4-grams 0/1; closest ref length 6.
    # Pooled with the dog image above: p1 = 8/9, p2 = 4/7, p3 = 2/5, p4 = 1/3; c = 9, r = 12.
    hypotheses = {"dog": "a dog runs on grass", "cat": "The the the cat"}
    references = {
        "cat": ["the cat sat on the mat", "there is a cat on the mat"],
        "dog": [DOG_REF],
        "unused": ["references of images without a hypothesis are ignored"],
    }
    scores = corpus_bleu_scores(hypotheses, references)
    bp = math.exp(1 - 12 / 9)
    p = [8 / 9, 4 / 7, 2 / 5, 1 / 3]
    assert scores == pytest.approx(
        {f"bleu_{n}": bp * math.prod(p[:n]) ** (1 / n) for n in range(1, 5)},
        rel=1e-9,
    )


def test_no_matching_4gram_is_smoothed_with_epsilon_0_1():
    # hyp "a dog runs fast": unigrams 3/4, bigrams 2/3, trigrams 1/2, 4-grams 0/1 -> NLTK's
    # method1 counts the zero as 0.1/1. c=4, r=6. Without smoothing BLEU-4 would be 0.
    scores = corpus_bleu_scores({"img": "a dog runs fast"}, {"img": [DOG_REF]})
    bp = math.exp(1 - 6 / 4)
    assert scores["bleu_3"] == pytest.approx(bp * (3 / 4 * 2 / 3 * 1 / 2) ** (1 / 3), rel=1e-9)
    assert scores["bleu_4"] == pytest.approx(bp * (3 / 4 * 2 / 3 * 1 / 2 * 0.1) ** (1 / 4), rel=1e-9)


def test_perfect_captions_score_one_whatever_the_case_and_punctuation():
    scores = corpus_bleu_scores({"img": "a DOG runs on the grass!"}, {"img": [DOG_REF]})
    assert scores == pytest.approx({"bleu_1": 1.0, "bleu_2": 1.0, "bleu_3": 1.0, "bleu_4": 1.0})


def test_an_image_without_references_is_an_error_naming_it():
    with pytest.raises(ValueError, match=r"^no references for 1 images, e\.g\. \['b'\]$"):
        corpus_bleu_scores({"a": "a dog", "b": "a cat"}, {"a": [DOG_REF], "b": []})
    with pytest.raises(ValueError, match=r"^no references for 4 images, e\.g\. \['a', 'b', 'c'\]$"):
        corpus_bleu_scores({i: "a dog" for i in "dcba"}, {})


def test_tokens_are_the_normalised_words():
    assert tokens("A dog, running -- on 2 feet.") == ["a", "dog", "running", "on", "feet"]


def test_cider_is_the_coco_scorer_on_the_normalised_words():
    from pycocoevalcap.cider.cider import Cider

    hypotheses = {"dog": "A dog runs on grass.", "cat": "The cat sat."}
    references = {
        "dog": [DOG_REF, "A brown dog is running"],
        "cat": ["The cat sat on the mat .", "A cat is sitting on a mat"],
    }
    expected, _ = Cider().compute_score(
        {
            "cat": ["the cat sat on the mat", "a cat is sitting on a mat"],
            "dog": ["a dog runs on the grass", "a brown dog is running"],
        },
        {"cat": ["the cat sat"], "dog": ["a dog runs on grass"]},
    )
    assert expected > 0.1
    assert corpus_cider(hypotheses, references) == pytest.approx(expected, rel=1e-12)

"""The coco-caption scorer (models/coco_caption.py): the toolkit the papers report, run for real (Java)."""

from __future__ import annotations

import pytest
from nltk.translate.bleu_score import corpus_bleu

from models.coco_caption import COCO_METRICS, JavaMissingError, coco_caption_scores

REFERENCES = {
    "dog": ["A dog runs on the grass.", "A brown dog is running through a field."],
    "bike": ["A man rides a bike down the road.", "A person on a bicycle."],
    "beach": ["Two children play on the beach.", "Kids play in the sand near the sea."],
}
PARTLY_RIGHT = {"dog": "a dog runs through the grass", "bike": "a man rides a red bike", "beach": "two kids play on the sand"}


@pytest.fixture(scope="module")
def partly_right():
    """Scored once for the module: each scorer call starts Java (a few seconds)."""
    return coco_caption_scores(PARTLY_RIGHT, REFERENCES)


def _words(text: str) -> list[str]:
    return text.lower().replace(".", "").split()


def test_bleu_agrees_with_nltk_on_the_same_tokens(partly_right):
    """An independent reference: NLTK's unsmoothed corpus BLEU with the closest reference length."""
    scores = partly_right
    ids = sorted(REFERENCES)
    refs = [[_words(r) for r in REFERENCES[i]] for i in ids]
    hyps = [_words(PARTLY_RIGHT[i]) for i in ids]
    for n in range(1, 5):
        expected = corpus_bleu(refs, hyps, weights=tuple([1.0 / n] * n))
        assert scores[f"coco_bleu_{n}"] == pytest.approx(expected, abs=1e-6), n
    assert 0.2 < scores["coco_bleu_4"] < scores["coco_bleu_1"] < 1.0


def test_every_score_rises_from_wrong_to_partly_right_to_exact(partly_right):
    wrong = {"dog": "a plate of food on a table", "bike": "a cat sleeps on a sofa", "beach": "a snowy mountain at night"}
    exact = {i: refs[0] for i, refs in REFERENCES.items()}
    low, high = (coco_caption_scores(h, REFERENCES) for h in (wrong, exact))
    mid = partly_right
    assert list(low) == list(COCO_METRICS)
    for metric in COCO_METRICS:
        assert low[metric] < mid[metric] < high[metric], metric
    assert high["coco_bleu_4"] > 0.99 and high["meteor"] > 0.9


def test_case_and_punctuation_do_not_change_the_scores(partly_right):
    shouted = {i: c.upper() + " !" for i, c in PARTLY_RIGHT.items()}
    assert coco_caption_scores(shouted, REFERENCES) == pytest.approx(partly_right)


def test_an_empty_caption_is_scored_as_a_miss_not_dropped(partly_right):
    scores = coco_caption_scores(dict(PARTLY_RIGHT, dog=""), REFERENCES)
    full = partly_right
    assert scores["meteor"] < full["meteor"] and scores["coco_cider_d"] < full["coco_cider_d"]


def test_mismatched_images_are_an_error():
    with pytest.raises(ValueError, match="same images"):
        coco_caption_scores({"dog": "a dog"}, REFERENCES)


def test_without_java_the_error_names_both_ways_out(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(JavaMissingError) as error:
        coco_caption_scores(PARTLY_RIGHT, REFERENCES)
    assert "default-jre-headless" in str(error.value) and "gate.coco_caption: false" in str(error.value)

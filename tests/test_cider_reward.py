"""SCST's reward: CIDEr-D with document frequencies fixed from the train split.

It must be coco-caption's CIDEr-D (the score the papers and the evaluator report) when
given the same document frequencies, and it must count `<end>` like a word.
"""

from __future__ import annotations

import pytest

from models.cider_reward import CiderD, ngram_counts

REFERENCES = {
    "1": ["a dog runs on the grass", "a brown dog is running", "the dog runs through a field"],
    "2": ["a man rides a bike", "a cyclist on a road", "a man is riding his bicycle down the road"],
    "3": ["two children play in the snow", "kids playing in snow", "two kids are sledding on a snowy hill"],
}
HYPOTHESES = {"1": "a dog runs on a field", "2": "a man rides a bicycle on the road", "3": "a child plays in the snow"}


def test_ngram_counts_are_every_one_to_four_gram():
    counts = ngram_counts(["a", "dog", "a", "dog"])
    assert counts[("a",)] == 2 and counts[("a", "dog")] == 2 and counts[("dog", "a")] == 1
    assert counts[("a", "dog", "a", "dog")] == 1 and sum(counts.values()) == 4 + 3 + 2 + 1


def test_with_the_scored_references_as_corpus_it_is_coco_captions_cider_d():
    from pycocoevalcap.cider.cider import Cider

    ids = sorted(REFERENCES)
    coco_mean, coco_each = Cider().compute_score({i: REFERENCES[i] for i in ids}, {i: [HYPOTHESES[i]] for i in ids})
    cider = CiderD([[r.split() for r in REFERENCES[i]] for i in ids])
    mine = [cider.score(HYPOTHESES[i].split(), cider.prepare([r.split() for r in REFERENCES[i]])) for i in ids]
    assert mine == pytest.approx(list(coco_each), rel=1e-9)
    assert sum(mine) / len(mine) == pytest.approx(coco_mean, rel=1e-9)
    assert min(mine) > 0.1  # real overlap, not a pair of zeros agreeing


def test_the_document_frequencies_stay_those_of_the_corpus():
    corpus = [[r.split() for r in refs] for refs in REFERENCES.values()]
    cider = CiderD(corpus)
    prepared = cider.prepare(corpus[0])
    alone = cider.score("a dog runs".split(), prepared)
    # Scoring other captions in between changes nothing (coco-caption's scorer would
    # recompute the frequencies from whatever batch it is given).
    for hypothesis in HYPOTHESES.values():
        cider.score(hypothesis.split(), cider.prepare(corpus[1]))
    assert cider.score("a dog runs".split(), prepared) == alone
    # A word in every image's references carries no weight; a rarer one does.
    assert cider.score(["a"], prepared) == 0.0 and cider.score(["dog"], prepared) > 0.0


def test_end_counts_as_a_word_so_stopping_is_rewarded():
    end = "<end>"
    corpus = [[[*r.split(), end] for r in refs] for refs in REFERENCES.values()]
    cider = CiderD(corpus)
    prepared = cider.prepare(corpus[0])
    stopped = cider.score([*"a dog runs on the grass".split(), end], prepared)
    cut = cider.score("a dog runs on the grass".split(), prepared)
    rambling = cider.score([*"a dog runs on the grass on the grass on the".split(), end], prepared)
    assert stopped > cut and stopped > rambling


def test_an_empty_corpus_or_image_without_references_is_refused():
    with pytest.raises(ValueError, match="corpus"):
        CiderD([])
    with pytest.raises(ValueError, match="without references"):
        CiderD([[["a"]]]).prepare([])

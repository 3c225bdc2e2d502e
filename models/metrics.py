"""Corpus BLEU-1..4 and CIDEr-D of generated captions against all references of each image.

Called by the BleuEvaluator component, the Trainer's per-epoch scoring, the model tests
and the benchmarks, so every score in this project is computed one way:
  - tokenization: `text.tokenize_text` (the caption normalisation, whitespace split),
    identical for references and hypotheses, and the same rule that built the training
    vocabulary;
  - BLEU: NLTK `corpus_bleu` with cumulative weights (1), (1/2,1/2), (1/3,1/3,1/3),
    (1/4,...), smoothed with NLTK's `method1` (epsilon for zero n-gram counts), so a small
    eval split with no matching 4-gram gives a tiny number instead of a warning and 0;
  - CIDEr-D: pycocoevalcap's scorer (the COCO caption evaluation's code) on the same
    tokens; its IDF comes from the references of the evaluated images, as in COCO's.
    The COCO toolkit would first run its PTB tokenizer (Java); the normalisation already
    strips punctuation and case, so every metric here sees the same words.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from models.contract import BLEU_METRICS
from models.text import tokenize_text

BLEU_WEIGHTS = dict(
    zip(
        BLEU_METRICS,
        ((1.0,), (0.5, 0.5), (1 / 3, 1 / 3, 1 / 3), (0.25, 0.25, 0.25, 0.25)),
    )
)


def corpus_bleu_scores(
    hypotheses: Mapping[str, str], references: Mapping[str, Sequence[str]]
) -> dict[str, float]:
    """BLEU-1..4 over the images in `hypotheses` (image_id -> caption)."""
    from nltk.translate.bleu_score import SmoothingFunction, corpus_bleu

    ids = sorted(hypotheses)
    missing = [i for i in ids if not references.get(i)]
    if missing:
        raise ValueError(f"no references for {len(missing)} images, e.g. {missing[:3]}")
    refs = [[tokenize_text(r) for r in references[i]] for i in ids]
    hyps = [tokenize_text(hypotheses[i]) for i in ids]
    smoothing = SmoothingFunction().method1
    return {
        name: float(corpus_bleu(refs, hyps, weights=weights, smoothing_function=smoothing))
        for name, weights in BLEU_WEIGHTS.items()
    }


def corpus_cider(hypotheses: Mapping[str, str], references: Mapping[str, Sequence[str]]) -> float:
    """CIDEr-D over the images in `hypotheses` (image_id -> caption); 0..10, usually < 2."""
    from pycocoevalcap.cider.cider import Cider

    ids = sorted(hypotheses)
    gts = {i: [" ".join(tokenize_text(r)) for r in references[i]] for i in ids}
    res = {i: [" ".join(tokenize_text(hypotheses[i]))] for i in ids}
    score, _ = Cider().compute_score(gts, res)
    return float(score)

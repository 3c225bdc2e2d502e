"""Corpus BLEU-1..4 of generated captions against all references of each image.

Called by the BleuEvaluator component, the model tests and the benchmarks, so every BLEU
figure in this project is computed one way:
  - tokenization: `normalize_text` then whitespace split (components/transform/text.py),
    identical for references and hypotheses, and the same normalisation that built the
    training vocabulary;
  - NLTK `corpus_bleu` with cumulative weights (1), (1/2,1/2), (1/3,1/3,1/3), (1/4,...);
  - smoothing: NLTK's `method1` (epsilon for zero n-gram counts), so a small eval split
    with no matching 4-gram gives a tiny number instead of a warning and 0.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from nltk.translate.bleu_score import SmoothingFunction, corpus_bleu

from components.transform.text import normalize_text

BLEU_WEIGHTS = {
    "bleu_1": (1.0,),
    "bleu_2": (0.5, 0.5),
    "bleu_3": (1 / 3, 1 / 3, 1 / 3),
    "bleu_4": (0.25, 0.25, 0.25, 0.25),
}


def tokens(text: str) -> list[str]:
    return normalize_text(text).split()


def corpus_bleu_scores(
    hypotheses: Mapping[str, str], references: Mapping[str, Sequence[str]]
) -> dict[str, float]:
    """BLEU-1..4 over the images in `hypotheses` (image_id -> caption)."""
    ids = sorted(hypotheses)
    missing = [i for i in ids if not references.get(i)]
    if missing:
        raise ValueError(f"no references for {len(missing)} images, e.g. {missing[:3]}")
    refs = [[tokens(r) for r in references[i]] for i in ids]
    hyps = [tokens(hypotheses[i]) for i in ids]
    smoothing = SmoothingFunction().method1
    return {
        name: float(corpus_bleu(refs, hyps, weights=weights, smoothing_function=smoothing))
        for name, weights in BLEU_WEIGHTS.items()
    }

"""CIDEr-D of token-id captions with document frequencies fixed in advance: SCST's reward.

Self-critical training (models/scst.py) scores thousands of sampled captions a step
against their image's references. coco-caption's scorer (pycocoevalcap) recomputes the
document frequencies from whatever it is given, so a batch's reward would depend on the
batch; here they come once from a fixed corpus, the train split's references (as in
Rennie et al. and ruotianluo/self-critical.pytorch's "corpus" mode), and each reference's
tf-idf vector is computed once.

The formula is coco-caption's CIDEr-D: n-grams 1..4, tf-idf with log(number of images) -
log(max(1, df)), clipped hypothesis weights, a Gaussian length penalty (sigma 6; lengths
counted as coco-caption does, in bigrams), mean over n and over references, times 10.
Captions are token-id sequences; whatever they include (e.g. `<end>`) counts as a word,
so the caller decides (models/scst.py keeps `<end>`, so stopping early or late is scored).
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Hashable, Sequence

Tokens = Sequence[Hashable]


def ngram_counts(tokens: Tokens, n: int = 4) -> Counter:
    """Counts of every 1..n-gram of `tokens`, as tuples."""
    tokens = tuple(tokens)
    return Counter(tokens[i : i + k] for k in range(1, n + 1) for i in range(len(tokens) - k + 1))


class CiderD:
    """Scores captions against references; document frequencies from `corpus` (one list of
    reference captions per image)."""

    def __init__(self, corpus: Sequence[Sequence[Tokens]], n: int = 4, sigma: float = 6.0):
        if not corpus:
            raise ValueError("CIDEr-D needs a corpus of references for its document frequencies")
        self.n, self.sigma = n, sigma
        self.document_frequency: Counter = Counter()
        for references in corpus:
            self.document_frequency.update({g for ref in references for g in ngram_counts(ref, n)})
        self.log_images = math.log(float(len(corpus)))

    def vector(self, tokens: Tokens) -> tuple[list[dict], list[float], int]:
        """The tf-idf weights per n-gram order, their norms, and the length (in bigrams)."""
        weights: list[dict] = [{} for _ in range(self.n)]
        norms = [0.0] * self.n
        length = 0
        for gram, count in ngram_counts(tokens, self.n).items():
            order = len(gram) - 1
            weight = count * (self.log_images - math.log(max(1.0, self.document_frequency[gram])))
            weights[order][gram] = weight
            norms[order] += weight * weight
            if order == 1:
                length += count
        return weights, [math.sqrt(x) for x in norms], length

    def prepare(self, references: Sequence[Tokens]) -> list[tuple[list[dict], list[float], int]]:
        """One image's reference vectors, to score many captions against (`score`)."""
        if not references:
            raise ValueError("an image without references cannot be scored")
        return [self.vector(ref) for ref in references]

    def score(self, tokens: Tokens, prepared: Sequence[tuple[list[dict], list[float], int]]) -> float:
        """CIDEr-D of one caption against one image's prepared references."""
        hyp, hyp_norms, hyp_length = self.vector(tokens)
        total = 0.0
        for ref, ref_norms, ref_length in prepared:
            penalty = math.exp(-((hyp_length - ref_length) ** 2) / (2 * self.sigma**2))
            for order in range(self.n):
                ref_weights = ref[order]
                overlap = sum(min(w, ref_weights.get(g, 0.0)) * ref_weights.get(g, 0.0) for g, w in hyp[order].items())
                if hyp_norms[order] != 0 and ref_norms[order] != 0:
                    overlap /= hyp_norms[order] * ref_norms[order]
                total += overlap * penalty
        return 10.0 * total / (self.n * len(prepared))

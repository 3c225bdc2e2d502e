"""Corpus CIDEr-D of generated captions against all references of each image.

pycocoevalcap's scorer (the COCO caption evaluation's code, from PyPI), fed the same
tokens as BLEU (`bleu.tokens`: the project's caption normalisation, whitespace split).
The COCO toolkit would first run its PTB tokenizer, a Java program; the normalisation
here already strips punctuation and case, so no Java is needed and every metric sees the
same words. Its IDF comes from the references of the evaluated images, as in COCO's.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from components.bleu_evaluator.bleu import tokens


def corpus_cider(hypotheses: Mapping[str, str], references: Mapping[str, Sequence[str]]) -> float:
    """CIDEr-D over the images in `hypotheses` (image_id -> caption); 0..10, usually < 2."""
    from pycocoevalcap.cider.cider import Cider

    ids = sorted(hypotheses)
    gts = {i: [" ".join(tokens(r)) for r in references[i]] for i in ids}
    res = {i: [" ".join(tokens(hypotheses[i]))] for i in ids}
    score, _ = Cider().compute_score(gts, res)
    return float(score)

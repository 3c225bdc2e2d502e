"""Scores captions the way the captioning papers do: the coco-caption toolkit (pycocoevalcap).

The published Flickr8k and COCO figures (Show, Attend and Tell, adaptive attention, ...)
come from this toolkit, not from NLTK: it tokenizes with the Stanford PTB tokenizer (a Java
jar), then computes BLEU-1..4 (its own closest-reference-length brevity penalty), METEOR 1.5
(a Java jar with its paraphrase table; both jars ship in the wheel, nothing is downloaded),
ROUGE-L and CIDEr-D (document frequencies from the references being scored, as
coco-caption does). SPICE is left out: it needs a separate Stanford CoreNLP download.

Java is required: `make` installs Debian's `default-jre-headless` when `java` is missing
(tools/ensure-java.sh). Without it, `coco_caption_scores` raises JavaMissingError naming
both ways out instead of skipping a score.
"""

from __future__ import annotations

import contextlib
import io
import shutil
from typing import Mapping, Sequence

from models.contract import METEOR_METRIC

# The toolkit's scores, as they are stored beside the project's own BLEU and CIDEr-D.
COCO_METRICS = ("coco_bleu_1", "coco_bleu_2", "coco_bleu_3", "coco_bleu_4", METEOR_METRIC, "coco_rouge_l", "coco_cider_d")


class JavaMissingError(RuntimeError):
    """The coco-caption tokenizer and METEOR are Java programs and there is no `java`."""


def require_java() -> str:
    """The path of `java`, or JavaMissingError that says how to get it."""
    java = shutil.which("java")
    if java is None:
        raise JavaMissingError(
            "the coco-caption scorer (PTB tokenizer, METEOR) needs Java and `java` is not on PATH: "
            "install it (Debian: sudo apt-get install -y default-jre-headless; `make` does it when run as root), "
            "or turn the scorer off with gate.coco_caption: false"
        )
    return java


def coco_caption_scores(
    hypotheses: Mapping[str, str], references: Mapping[str, Sequence[str]]
) -> dict[str, float]:
    """coco-caption BLEU-1..4, METEOR, ROUGE-L and CIDEr-D of one caption per image.

    `hypotheses` maps an image id to its caption, `references` the same ids to their
    reference captions (raw text: the PTB tokenizer lower-cases and strips punctuation).
    """
    if set(hypotheses) != set(references):
        raise ValueError("hypotheses and references must cover the same images")
    if not hypotheses:
        raise ValueError("no captions to score")
    require_java()
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    ids = sorted(hypotheses)
    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({i: [{"caption": r} for r in references[i]] for i in ids})
    res = tokenizer.tokenize({i: [{"caption": hypotheses[i]}] for i in ids})
    # A caption that tokenizes to nothing must still be one (empty) hypothesis, or METEOR's
    # protocol breaks and BLEU skips the image.
    res = {i: res.get(i) or [""] for i in ids}

    scores: dict[str, float] = {}
    with contextlib.redirect_stdout(io.StringIO()):  # Bleu prints its length statistics
        bleu, _ = Bleu(4).compute_score(gts, res)
    scores.update({f"coco_bleu_{n}": float(b) for n, b in enumerate(bleu, start=1)})
    meteor = Meteor()
    try:
        scores[METEOR_METRIC] = float(meteor.compute_score(gts, res)[0])
    finally:
        _close_meteor(meteor)
    scores["coco_rouge_l"] = float(Rouge().compute_score(gts, res)[0])
    scores["coco_cider_d"] = float(Cider().compute_score(gts, res)[0])
    return {k: scores[k] for k in COCO_METRICS}


def _close_meteor(meteor) -> None:
    """Ends METEOR's Java process now rather than at garbage collection."""
    process = getattr(meteor, "meteor_p", None)
    if process is None or process.poll() is not None:
        return
    with contextlib.suppress(Exception):
        with meteor.lock:
            process.stdin.close()
            process.kill()
            process.wait(timeout=10)

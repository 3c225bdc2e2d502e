"""The caption vocabulary as the Trainer and the serving graph need it.

Called by the Trainer (vocabulary size, special ids, the id -> word table of the serving
signature) and by tests. The vocabulary lives in the transform graph as the tft asset
named `contract.VOCAB_NAME` (written by components/transform/preprocessing.py); this
module only adds the ids that the preprocessing_fn puts around it: 0 is padding, 1..V the
file's entries, V+1 is <unk>.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from models import text
from models.contract import VOCAB_NAME

if TYPE_CHECKING:
    import tensorflow_transform as tft


def load_vocabulary(tft_output: tft.TFTransformOutput) -> list[str]:
    """The id -> token list `[PAD, <start>, <end>, words..., <unk>]`: index == id."""
    words = [w.decode("utf-8") for w in tft_output.vocabulary_by_name(VOCAB_NAME)]
    return [text.PAD, *words, text.UNK]


def vocabulary_file(tft_output: tft.TFTransformOutput) -> str:
    """Path of the vocabulary asset (entries for ids 1..V, one a line)."""
    return tft_output.vocabulary_file_by_name(VOCAB_NAME)


def special_ids(vocab: list[str]) -> dict[str, int]:
    """`{"pad": 0, "start": ..., "end": ..., "unk": V + 1}` for a `load_vocabulary` list."""
    if not vocab or vocab[0] != text.PAD or vocab[-1] != text.UNK:
        raise ValueError("expected the list of load_vocabulary: [PAD, entries..., UNK]")
    return {
        "pad": 0,
        "start": vocab.index(text.START),
        "end": vocab.index(text.END),
        "unk": len(vocab) - 1,
    }


def decode(ids: list[int], vocab: list[str]) -> str:
    """Token ids of one caption -> its words, without <start>, <end> and padding."""
    ids_of = special_ids(vocab)
    words = []
    for i in ids:
        if i == ids_of["end"]:
            break
        if i not in (ids_of["pad"], ids_of["start"]):
            words.append(vocab[i])
    return " ".join(words)

"""Caption text normalisation, shared by tf.Transform, the BLEU evaluator and serving.

Called by components/transform/preprocessing.py (inside the transform graph), by the
serving export and by models/metrics.py, so that training targets, references and
hypotheses are normalised by the very same rule. `normalize` / `tokenize` are stock
TensorFlow string ops (usable in and out of tf.Transform and in a serving graph);
`normalize_text` / `tokenize_text` are the pure-Python twins, tested to give identical
results, and need no TensorFlow (the scorers import this module).

The rule: lower-case ASCII letters, replace every run of characters that are not `a-z`
by one space, strip. So punctuation, digits and whitespace of any kind (tabs, newlines)
all become word separators. Letters outside ASCII are *not* letters here: "café" becomes
"caf" and "naïve" becomes "na ve" (Flickr8k captions are ASCII; a Unicode-aware rule would
need tensorflow-text, which the serving graph must not depend on).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # TF is imported where it is used: BLEU and its tests need only the Python twin
    import tensorflow as tf

START = "<start>"
END = "<end>"
UNK = "<unk>"
PAD = ""  # id 0

# RE2 (TF) and Python `re` agree on this class; both read the input as Unicode code points
# (TF: UTF-8), and whatever a non-a-z character is, it becomes a space.
_NOT_A_TO_Z = "[^a-z]+"
_NOT_A_TO_Z_RE = re.compile(_NOT_A_TO_Z)
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def normalize(captions: tf.Tensor) -> tf.Tensor:
    """Normalise a string tensor of any shape, element-wise (see the module docstring)."""
    import tensorflow as tf

    # encoding="" lowers ASCII only, like `_ASCII_LOWER` below (Python's str.lower would
    # also turn e.g. the Kelvin sign into "k").
    lowered = tf.strings.lower(captions)
    spaced = tf.strings.regex_replace(lowered, _NOT_A_TO_Z, " ")
    return tf.strings.strip(spaced)


def tokenize(normalized: tf.Tensor) -> tf.RaggedTensor:
    """Split normalised text on whitespace: shape [...] -> ragged [..., (words)].

    A scalar input gives a 1-D dense tensor of words (tf.strings.split's convention).
    """
    import tensorflow as tf

    return tf.strings.split(normalized)


def normalize_text(text: str) -> str:
    """Pure-Python `normalize` for one string; identical output."""
    return _NOT_A_TO_Z_RE.sub(" ", text.translate(_ASCII_LOWER)).strip()


def tokenize_text(text: str) -> list[str]:
    """Pure-Python `tokenize(normalize(...))` for one string."""
    return normalize_text(text).split()

"""An ensemble of trained decoders that `models.decoding` decodes like one captioner.

Each step's distribution is the mean of the members' probabilities (the log of the mean of
their softmaxes), so greedy and beam search pick the tokens the members agree on. Members
must share the vocabulary; each reads its own image inputs, namespaced `m<i>/<name>`, so
decoders trained on different backbones can be combined. Measured by bench/ensemble.py.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import tensorflow as tf


def member_key(index: int, name: str) -> str:
    """The ensemble's input name for member `index`'s image input `name`."""
    return f"m{index}/{name}"


class EnsembleCaptioner:
    """N captioners as one: the duck type greedy_decode / beam_search_decode expect."""

    def __init__(self, members: Sequence) -> None:
        if not members:
            raise ValueError("an ensemble needs at least one member")
        sizes = {m.vocab_size for m in members}
        if len(sizes) != 1:
            raise ValueError(f"the members' vocabularies differ in size: {sorted(sizes)}")
        self.members = list(members)
        self.vocab_size = sizes.pop()
        self.image_inputs = tuple(member_key(i, name) for i, m in enumerate(self.members) for name in m.image_inputs)

    def member_inputs(self, inputs: Mapping[str, tf.Tensor], index: int) -> dict[str, tf.Tensor]:
        return {name: inputs[member_key(index, name)] for name in self.members[index].image_inputs}

    def encode_image(self, inputs: Mapping[str, tf.Tensor], training: bool = False) -> tuple:
        return tuple(m.encode_image(self.member_inputs(inputs, i), training=training) for i, m in enumerate(self.members))

    def initial_state(self, image: tuple) -> list[tf.Tensor]:
        """The members' states, flattened into one list (beam search reorders them alike)."""
        per_member = [m.initial_state(encoded) for m, encoded in zip(self.members, image)]
        self._state_counts = [len(states) for states in per_member]  # read by `step` while tracing
        return [s for states in per_member for s in states]

    def step(self, tokens: tf.Tensor, states: list[tf.Tensor], image: tuple) -> tuple[tf.Tensor, list[tf.Tensor]]:
        """log(mean of the members' probabilities) [B, vocab] and the members' new states."""
        log_probs, new_states, offset = [], [], 0
        for member, encoded, count in zip(self.members, image, self._state_counts):
            logits, member_states = member.step(tokens, states[offset : offset + count], encoded)
            log_probs.append(tf.nn.log_softmax(logits))
            new_states.extend(member_states)
            offset += count
        mean = tf.reduce_logsumexp(tf.stack(log_probs), axis=0) - math.log(len(self.members))
        return mean, new_states

"""The caption decoder: the notebook's merge architecture, as a Keras model.

Called by models/trainer.py (teacher-forced training over whole sequences) and by
models/decoding.py (one step at a time inside the serving graph). Both paths use the same
layers, so the exported decoder is exactly the trained one:

    image features -> Dense ----------------------------.
    tokens -> Embedding -> LSTM -> (per step) hidden -> add -> Dense -> logits over vocab
"""

from __future__ import annotations

import keras
import tensorflow as tf

from models.contract import TRANSFORMED_FEATURES_KEY


@keras.saving.register_keras_serializable(package="captioner")
class MergeCaptioner(keras.Model):
    """Predicts the next token at every position from image features and the tokens so far."""

    # The image inputs it reads (the trainer feeds them; the export computes them).
    image_inputs = (TRANSFORMED_FEATURES_KEY,)

    def __init__(self, vocab_size: int, embedding_dim: int, hidden_dim: int, dropout: float, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.embedding_dim = embedding_dim
        self.hidden_dim = hidden_dim
        self.dropout_rate = dropout
        self.image_dropout = keras.layers.Dropout(dropout, name="image_dropout")
        self.image_projection = keras.layers.Dense(hidden_dim, activation="relu", name="image_projection")
        self.embedding = keras.layers.Embedding(vocab_size, embedding_dim, name="embedding")
        self.lstm = keras.layers.LSTM(hidden_dim, return_sequences=True, name="lstm")
        self.merge_dropout = keras.layers.Dropout(dropout, name="merge_dropout")
        self.merge_dense = keras.layers.Dense(hidden_dim, activation="relu", name="merge_dense")
        self.logits = keras.layers.Dense(vocab_size, name="logits")

    def call(self, inputs: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        """inputs: image_features [B, D], tokens [B, T] -> logits [B, T, vocab]."""
        return self.teacher_forced(self.encode_image(inputs, training=training), inputs["tokens"], training)

    def teacher_forced(self, image: tf.Tensor, tokens: tf.Tensor, training: bool = False) -> tf.Tensor:
        """Logits [B, T, vocab] for tokens [B, T] from an encoded image (`encode_image`)."""
        hidden = self.lstm(self.embedding(tokens), training=training)
        return self._head(hidden + image[:, None, :], training=training)

    def encode_image(self, inputs: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        """The projected image [B, H], computed once per caption."""
        return self.image_projection(self.image_dropout(inputs[TRANSFORMED_FEATURES_KEY], training=training))

    def initial_state(self, image: tf.Tensor) -> list[tf.Tensor]:
        """Zero LSTM state (h, c) for a batch, as the training path starts from."""
        zeros = tf.zeros([tf.shape(image)[0], self.hidden_dim], dtype=image.dtype)
        return [zeros, zeros]

    def step(self, tokens: tf.Tensor, states: list[tf.Tensor], image: tf.Tensor) -> tuple[tf.Tensor, list[tf.Tensor]]:
        """One decoding step: tokens [B] -> logits [B, vocab] and the new (h, c)."""
        hidden, new_states = self.lstm.cell(self.embedding(tokens), states, training=False)
        return self._head(hidden + image, training=False), list(new_states)

    def _head(self, merged: tf.Tensor, training: bool) -> tf.Tensor:
        x = self.merge_dense(self.merge_dropout(merged, training=training))
        return self.logits(self.merge_dropout(x, training=training))

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "vocab_size": self.vocab_size,
            "embedding_dim": self.embedding_dim,
            "hidden_dim": self.hidden_dim,
            "dropout": self.dropout_rate,
        }

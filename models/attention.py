"""The attention decoder: soft additive attention over the backbone's spatial grid.

Show, Attend and Tell (Xu et al., 2015) style, with the same interface as the merge model
(models/decoder.py), so training (models/trainer.py), the decoding loops
(models/decoding.py) and the export (models/export.py) treat both alike:

    grid [B, L, C] -> Dropout -> Dense (annotations a_i) ----------------.
    h_{t-1} -> additive attention over a_i -> context z_t, gated by sigmoid(W h_{t-1})
    [Embedding(y_{t-1}); z_t] -> LSTMCell -> h_t
    Dense([h_t; z_t]) + Embedding(y_{t-1}) -> Dropout -> Dense -> logits over vocab

The initial LSTM state comes from the mean annotation. Training runs the same `step` for
every position (teacher forcing), unrolled over the fixed caption length. With
`attention_coverage` > 0, training adds the paper's doubly stochastic regularisation:
coverage * mean over grid cells of (1 - attention summed over the caption's words)^2.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from models.contract import TRANSFORMED_GRID_KEY


@keras.saving.register_keras_serializable(package="captioner")
class AttentionCaptioner(keras.Model):
    """Predicts the next token from the attended image grid and the tokens so far."""

    image_inputs = (TRANSFORMED_GRID_KEY,)

    def __init__(
        self,
        vocab_size: int,
        embedding_dim: int,
        hidden_dim: int,
        dropout: float,
        attention_dim: int = 256,
        attention_coverage: float = 0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.embedding_dim = embedding_dim
        self.hidden_dim = hidden_dim
        self.attention_dim = attention_dim
        self.dropout_rate = dropout
        self.attention_coverage = attention_coverage
        self.grid_dropout = keras.layers.Dropout(dropout, name="grid_dropout")
        self.annotation = keras.layers.Dense(hidden_dim, activation="relu", name="annotation")
        self.attention_keys = keras.layers.Dense(attention_dim, use_bias=False, name="attention_keys")
        self.attention_query = keras.layers.Dense(attention_dim, name="attention_query")
        self.attention_score = keras.layers.Dense(1, use_bias=False, name="attention_score")
        self.context_gate = keras.layers.Dense(hidden_dim, activation="sigmoid", name="context_gate")
        self.init_h = keras.layers.Dense(hidden_dim, activation="tanh", name="init_h")
        self.init_c = keras.layers.Dense(hidden_dim, activation="tanh", name="init_c")
        self.embedding = keras.layers.Embedding(vocab_size, embedding_dim, name="embedding")
        self.cell = keras.layers.LSTMCell(hidden_dim, name="lstm_cell")
        self.deep_output = keras.layers.Dense(embedding_dim, name="deep_output")
        self.output_dropout = keras.layers.Dropout(dropout, name="output_dropout")
        self.logits = keras.layers.Dense(vocab_size, name="logits")

    def call(self, inputs: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        """inputs: image_grid [B, L, C], tokens [B, T] (T static) -> logits [B, T, vocab]."""
        tokens = inputs["tokens"]
        logits, weights = self._teacher_forced(self.encode_image(inputs, training=training), tokens, training)
        if training and self.attention_coverage > 0:
            self.add_loss(self.attention_coverage * self._coverage_penalty(weights, tokens))
        return logits

    def teacher_forced(self, image: tuple[tf.Tensor, tf.Tensor], tokens: tf.Tensor, training: bool = False) -> tf.Tensor:
        """Logits [B, T, vocab] for tokens [B, T] (T static) from an encoded image (`encode_image`)."""
        return self._teacher_forced(image, tokens, training)[0]

    def _teacher_forced(self, image, tokens, training: bool) -> tuple[tf.Tensor, tf.Tensor]:
        states = self.initial_state(image)
        logits, weights = [], []
        for t in range(tokens.shape[1]):
            step_logits, states, step_weights = self._step(tokens[:, t], states, image, training)
            logits.append(step_logits)
            weights.append(step_weights)
        return tf.stack(logits, axis=1), tf.stack(weights, axis=1)

    @staticmethod
    def _coverage_penalty(weights: tf.Tensor, tokens: tf.Tensor) -> tf.Tensor:
        """mean over images and grid cells of (1 - sum over real positions of attention)^2."""
        real = tf.cast(tokens != 0, weights.dtype)[:, :, None]  # padding attends to nothing
        return tf.reduce_mean(tf.square(1.0 - tf.reduce_sum(weights * real, axis=1)))

    def encode_image(self, inputs: dict[str, tf.Tensor], training: bool = False) -> tuple[tf.Tensor, tf.Tensor]:
        """The annotations a_i [B, L, H] and their attention keys [B, L, A], computed once."""
        annotations = self.annotation(self.grid_dropout(inputs[TRANSFORMED_GRID_KEY], training=training))
        return annotations, self.attention_keys(annotations)

    def initial_state(self, image: tuple[tf.Tensor, tf.Tensor]) -> list[tf.Tensor]:
        mean = tf.reduce_mean(image[0], axis=1)
        return [self.init_h(mean), self.init_c(mean)]

    def step(self, tokens: tf.Tensor, states: list[tf.Tensor], image: tuple[tf.Tensor, tf.Tensor]) -> tuple[tf.Tensor, list[tf.Tensor]]:
        """One decoding step: tokens [B] -> logits [B, vocab] and the new (h, c)."""
        logits, states, _ = self._step(tokens, states, image, training=False)
        return logits, states

    def step_with_attention(self, tokens, states, image):
        """`step`, plus the attention weights [B, L] over the grid it used (for the page's heat map)."""
        return self._step(tokens, states, image, training=False)

    def attend(self, h: tf.Tensor, image: tuple[tf.Tensor, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
        """Context [B, H] and attention weights [B, L] for the query h [B, H]."""
        annotations, keys = image
        scores = self.attention_score(tf.tanh(keys + self.attention_query(h)[:, None, :]))[..., 0]
        weights = tf.nn.softmax(scores, axis=-1)
        return tf.einsum("bl,blh->bh", weights, annotations), weights

    def _step(self, tokens, states, image, training: bool):
        h, c = states
        embedded = self.embedding(tokens)
        context, weights = self.attend(h, image)
        context = self.context_gate(h) * context
        h, (h, c) = self.cell(tf.concat([embedded, context], axis=-1), [h, c], training=training)
        out = self.deep_output(tf.concat([h, context], axis=-1)) + embedded
        return self.logits(self.output_dropout(out, training=training)), [h, c], weights

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "vocab_size": self.vocab_size,
            "embedding_dim": self.embedding_dim,
            "hidden_dim": self.hidden_dim,
            "dropout": self.dropout_rate,
            "attention_dim": self.attention_dim,
            "attention_coverage": self.attention_coverage,
        }

"""Caption generation inside the TensorFlow graph: greedy and beam search.

Called by models/export.py when it builds the serving signatures, and by tests. The loops
are AutoGraph `tf.range` loops (tf.while_loop in the graph), so a whole batch of captions
comes out of one call: no `model.predict` per token from Python, and TF Serving can run it.
"""

from __future__ import annotations

import tensorflow as tf

from typing import Any, Mapping

Captioner = Any  # models.decoder.MergeCaptioner or models.attention.AttentionCaptioner

NEG_INF = -1e9


def _batch_size(image_inputs: Mapping[str, tf.Tensor]) -> tf.Tensor:
    return tf.shape(next(iter(image_inputs.values())))[0]


def repeated_ngram_mask(sequences: tf.Tensor, vocab_size: int, n: int) -> tf.Tensor:
    """[B, K, V]: True where the next token would repeat an n-gram already in the sequence.

    `sequences` [B, K, T] are the tokens generated so far. Blocking these (`no_repeat_ngram_size`,
    as in Hugging Face's generate) stops captions such as "a man riding a bicycle on a
    bicycle": the next token may not complete an n-gram that occurred before.
    """
    batch, beams = tf.shape(sequences)[0], tf.shape(sequences)[1]
    # n-1 leading sentinels keep every slice below in range while fewer than n tokens
    # exist; a window of sentinels never precedes a real token, so none is blocked by them.
    sentinels = tf.fill([batch, beams, n - 1], tf.constant(-1, sequences.dtype))
    padded = tf.concat([sentinels, sequences], axis=2)
    length = tf.shape(padded)[2]
    context = padded[:, :, length - (n - 1) :]  # the last n-1 tokens
    followers = padded[:, :, n - 1 :]  # the token after each earlier window
    matches = tf.ones(tf.shape(followers), tf.bool)
    for i in range(n - 1):
        window_part = padded[:, :, i : length - (n - 1) + i]
        matches &= tf.equal(window_part, context[:, :, i : i + 1])
    blocked = tf.reshape(tf.where(matches, followers, -1) + 1, [batch * beams, -1])
    counts = tf.math.bincount(
        tf.cast(blocked, tf.int32), minlength=vocab_size + 1, maxlength=vocab_size + 1, axis=-1
    )
    return tf.reshape(counts[:, 1:] > 0, [batch, beams, vocab_size])


def greedy_decode(
    model: Captioner,
    image_inputs: Mapping[str, tf.Tensor],
    start_id: int,
    end_id: int,
    pad_id: int,
    max_length: int,
    no_repeat_ngram_size: int = 0,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Token ids [B, <= max_length-1] (without <start>; pad after <end>) and their log-probability [B].

    `image_inputs` holds what the model reads (its `image_inputs`: pooled features, grid).
    `no_repeat_ngram_size` n > 0: never complete an n-gram the caption already has.
    """
    image = model.encode_image(image_inputs)
    states = model.initial_state(image)
    batch = _batch_size(image_inputs)
    tokens = tf.fill([batch], tf.constant(start_id, tf.int64))
    finished = tf.zeros([batch], tf.bool)
    log_probability = tf.zeros([batch], tf.float32)
    generated = tf.zeros([batch, 0], tf.int64)
    for _ in tf.range(max_length - 1):
        tf.autograph.experimental.set_loop_options(shape_invariants=[(generated, tf.TensorShape([None, None]))])
        logits, states = model.step(tokens, states, image)
        step_log_probs = tf.nn.log_softmax(logits)
        if no_repeat_ngram_size > 0:
            blocked = repeated_ngram_mask(generated[:, None, :], model.vocab_size, no_repeat_ngram_size)[:, 0]
            step_log_probs = tf.where(blocked, NEG_INF, step_log_probs)
        next_tokens = tf.argmax(step_log_probs, axis=-1, output_type=tf.int64)
        step_log_probability = tf.reduce_max(step_log_probs, axis=-1)
        log_probability += tf.where(finished, 0.0, step_log_probability)
        next_tokens = tf.where(finished, tf.constant(pad_id, tf.int64), next_tokens)
        generated = tf.concat([generated, next_tokens[:, None]], axis=1)
        finished = finished | tf.equal(next_tokens, end_id)
        tokens = next_tokens
        if tf.reduce_all(finished):
            break
    return generated, log_probability


def sample_decode(
    model: Captioner,
    image_inputs: Mapping[str, tf.Tensor],
    start_id: int,
    end_id: int,
    pad_id: int,
    max_length: int,
    seed: tf.Tensor,
    samples_per_image: int = 1,
) -> tf.Tensor:
    """Captions sampled from the model's distribution: ids [B * samples_per_image,
    max_length-1] (pad after <end>), each image's samples next to each other.

    Self-critical training's samples (models/scst.py). Each token is drawn from the softmax
    of the step's logits, except padding and <start>, which no caption contains. `seed` is
    a stateless seed [2] (int32/int64), so a training's samples repeat with its seed. Each
    image is encoded once and its encoding repeated for its samples.
    """
    image = tf.nest.map_structure(lambda t: tf.repeat(t, samples_per_image, axis=0), model.encode_image(image_inputs))
    states = model.initial_state(image)
    batch = _batch_size(image_inputs) * samples_per_image
    never = tf.where(tf.reduce_any(tf.range(model.vocab_size)[None, :] == [[pad_id], [start_id]], axis=0), NEG_INF, 0.0)
    tokens = tf.fill([batch], tf.constant(start_id, tf.int64))
    finished = tf.zeros([batch], tf.bool)
    generated = tf.TensorArray(tf.int64, size=max_length - 1)
    for t in tf.range(max_length - 1):
        logits, states = model.step(tokens, states, image)
        step_seed = tf.random.experimental.stateless_fold_in(seed, t)
        drawn = tf.random.stateless_categorical(logits + never, 1, step_seed, dtype=tf.int64)[:, 0]
        next_tokens = tf.where(finished, tf.constant(pad_id, tf.int64), drawn)
        generated = generated.write(t, next_tokens)
        finished = finished | tf.equal(next_tokens, end_id)
        tokens = next_tokens
    return tf.transpose(generated.stack())


def beam_search_decode(
    model: Captioner,
    image_inputs: Mapping[str, tf.Tensor],
    start_id: int,
    end_id: int,
    pad_id: int,
    max_length: int,
    beam_width: int,
    length_penalty: float,
    no_repeat_ngram_size: int = 0,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Beam search: ids [B, K, T] best first, and scores [B, K] (log-prob / length**alpha).

    `no_repeat_ngram_size` n > 0: no beam completes an n-gram it already has.
    """
    k = beam_width
    vocab = model.vocab_size
    batch = _batch_size(image_inputs)
    # Each image's encoding repeated for its K beams: [B*K, ...].
    image = tf.nest.map_structure(lambda t: tf.repeat(t, k, axis=0), model.encode_image(image_inputs))
    states = model.initial_state(image)
    tokens = tf.fill([batch * k], tf.constant(start_id, tf.int64))
    # Only the first beam is alive at the start, so the K beams do not all repeat it.
    log_probs = tf.tile(tf.constant([[0.0] + [NEG_INF] * (k - 1)]), [batch, 1])
    finished = tf.zeros([batch, k], tf.bool)
    lengths = tf.zeros([batch, k], tf.float32)
    sequences = tf.zeros([batch, k, 0], tf.int64)
    # A finished beam may only continue with pad, at no cost.
    pad_only = tf.where(tf.range(vocab) == pad_id, 0.0, NEG_INF)
    for _ in tf.range(max_length - 1):
        tf.autograph.experimental.set_loop_options(
            shape_invariants=[(sequences, tf.TensorShape([None, k, None]))]
        )
        logits, new_states = model.step(tokens, states, image)
        step_log_probs = tf.reshape(tf.nn.log_softmax(logits), [batch, k, vocab])
        if no_repeat_ngram_size > 0:
            blocked = repeated_ngram_mask(sequences, vocab, no_repeat_ngram_size)
            step_log_probs = tf.where(blocked, NEG_INF, step_log_probs)
        step_log_probs = tf.where(finished[:, :, None], pad_only[None, None, :], step_log_probs)
        total = tf.reshape(log_probs[:, :, None] + step_log_probs, [batch, k * vocab])
        log_probs, flat_index = tf.math.top_k(total, k=k)
        parent = flat_index // vocab  # [B, K] which beam each survivor extends
        next_tokens = tf.cast(flat_index % vocab, tf.int64)
        was_finished = tf.gather(finished, parent, batch_dims=1)
        lengths = tf.gather(lengths, parent, batch_dims=1) + tf.cast(~was_finished, tf.float32)
        finished = was_finished | tf.equal(next_tokens, end_id)
        sequences = tf.concat([tf.gather(sequences, parent, batch_dims=1), next_tokens[:, :, None]], axis=2)
        flat_parent = tf.reshape(parent + tf.range(batch)[:, None] * k, [-1])
        states = [tf.gather(s, flat_parent) for s in new_states]
        tokens = tf.reshape(next_tokens, [-1])
        if tf.reduce_all(finished):
            break
    scores = log_probs / tf.pow(tf.maximum(lengths, 1.0), length_penalty)
    order = tf.argsort(scores, axis=1, direction="DESCENDING")
    return tf.gather(sequences, order, batch_dims=1), tf.gather(scores, order, batch_dims=1)


def replay_attention(
    model: Captioner,
    image_inputs: Mapping[str, tf.Tensor],
    ids: tf.Tensor,
    start_id: int,
    pad_id: int,
) -> tuple[tf.Tensor, tf.Tensor]:
    """For captions already decoded (ids [B, T], pad after <end>): the attention weights [B, T, L]
    each token was predicted with, and that token's probability [B, T]; zeros on padding.

    Feeding the chosen tokens back (teacher forcing) replays the decoder's states exactly, so
    these are the weights the decoding loop used; attention models only (`step_with_attention`).
    """
    image = model.encode_image(image_inputs)
    states = model.initial_state(image)
    batch, length = tf.shape(ids)[0], tf.shape(ids)[1]
    previous = tf.concat([tf.fill([batch, 1], tf.constant(start_id, ids.dtype)), ids[:, :-1]], axis=1)
    weights = tf.TensorArray(tf.float32, size=length)
    probabilities = tf.TensorArray(tf.float32, size=length)
    for t in tf.range(length):
        logits, states, step_weights = model.step_with_attention(previous[:, t], states, image)
        weights = weights.write(t, step_weights)
        probabilities = probabilities.write(t, tf.gather(tf.nn.softmax(logits), ids[:, t], batch_dims=1))
    real = tf.cast(ids != pad_id, tf.float32)
    weights = tf.transpose(weights.stack(), [1, 0, 2]) * real[:, :, None]
    return weights, tf.transpose(probabilities.stack()) * real

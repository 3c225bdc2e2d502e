"""TFX Trainer entry point (`run_fn`): teacher-forced training, then the serving export.

Called by TFX's Trainer component (`run_fn="models.trainer.run_fn"` in
pipelines/pipeline.py) with the transformed examples and the transform graph. The
hyper-parameters arrive as `custom_config` (built from the typed config by
`trainer_config`), so the run is fully described by the pipeline's exec properties.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
import tensorflow_transform as tft

from components.transform.vocabulary import load_vocabulary
from models.backbones import get_backbone
from models.decoder import MergeCaptioner
from models.export import DecodeSettings, export_serving_model

log = logging.getLogger(__name__)

HISTORY_FILE = "history.json"


@dataclasses.dataclass(frozen=True)
class TrainerConfig:
    """Everything run_fn needs, flattened from the project config (JSON-safe)."""

    backbone: str
    weights: str | None
    weights_path: str | None
    max_length: int
    embedding_dim: int
    hidden_dim: int
    dropout: float
    epochs: int
    batch_size: int
    learning_rate: float
    early_stopping_patience: int
    max_steps: int
    seed: int
    beam_width: int
    length_penalty: float
    default_decoder: str


def trainer_config(config: Any) -> dict[str, Any]:
    """The Trainer's custom_config from the project Config."""
    return dataclasses.asdict(
        TrainerConfig(
            backbone=config.features.backbone,
            weights=config.features.weights,
            weights_path=config.features.weights_path
            and str(config.resolve(config.features.weights_path)),
            max_length=config.text.max_length,
            embedding_dim=config.model.embedding_dim,
            hidden_dim=config.model.hidden_dim,
            dropout=config.model.dropout,
            epochs=config.train.epochs,
            batch_size=config.train.batch_size,
            learning_rate=config.train.learning_rate,
            early_stopping_patience=config.train.early_stopping_patience,
            max_steps=config.train.max_steps,
            seed=config.train.seed,
            beam_width=config.decode.beam_width,
            length_penalty=config.decode.length_penalty,
            default_decoder=config.decode.default,
        )
    )


def load_caption_rows(
    file_pattern: list[str] | str, feature_spec: dict[str, Any], max_length: int
) -> tuple[np.ndarray, np.ndarray]:
    """Every caption as a row: (image features [N, D], token ids [N, max_length]).

    Each transformed example is one image with all of its captions (flattened ids, each
    padded to max_length); here every caption becomes a row. Rows are sorted by image_id,
    so the training order does not depend on how Beam sharded the examples: the same data
    and config train the same model on any runner.
    """
    patterns = [file_pattern] if isinstance(file_pattern, str) else list(file_pattern)
    files = sorted(f for pattern in patterns for f in tf.io.gfile.glob(pattern))
    spec = {k: feature_spec[k] for k in ("image_id", "image_features", "caption_ids")}
    image_ids, features, captions = [], [], []
    batches = tf.data.TFRecordDataset(files, compression_type="GZIP").batch(256)
    for batch in batches.map(lambda serialized: tf.io.parse_example(serialized, spec)):
        ids = batch["caption_ids"]
        ids = tf.sparse.to_dense(ids) if isinstance(ids, tf.SparseTensor) else ids
        ids = tf.reshape(ids, [tf.shape(ids)[0], -1, max_length]).numpy()  # [B, captions, L]
        for image_id, feature, image_captions in zip(batch["image_id"].numpy(), batch["image_features"].numpy(), ids):
            for caption in image_captions:
                if caption.any():  # rows of zeros pad images with fewer captions
                    image_ids.append(image_id)
                    features.append(feature)
                    captions.append(caption)
    if not captions:
        raise ValueError(f"no captions in {files}")
    order = np.argsort(np.array(image_ids), kind="stable")
    return np.stack(features)[order], np.stack(captions)[order]


def caption_dataset(
    file_pattern: list[str] | str,
    feature_spec: dict[str, Any],
    max_length: int,
    batch_size: int,
    shuffle_seed: int | None,
) -> tf.data.Dataset:
    """((image_features, tokens[:-1]), tokens[1:], mask) batches, one row per caption.

    The mask is the masked loss: padding after <end> carries no weight.
    """
    features, captions = load_caption_rows(file_pattern, feature_spec, max_length)
    ds = tf.data.Dataset.from_tensor_slices((features, captions))
    if shuffle_seed is not None:
        ds = ds.shuffle(len(captions), seed=shuffle_seed, reshuffle_each_iteration=True)

    def teacher_forcing(features: tf.Tensor, ids: tf.Tensor):
        targets = ids[:, 1:]
        mask = tf.cast(targets != 0, tf.float32)
        return {"image_features": features, "tokens": ids[:, :-1]}, targets, mask

    return ds.batch(batch_size).map(teacher_forcing, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def build_model(vocab_size: int, cfg: TrainerConfig) -> MergeCaptioner:
    model = MergeCaptioner(vocab_size, cfg.embedding_dim, cfg.hidden_dim, cfg.dropout)
    model.compile(
        optimizer=keras.optimizers.Adam(cfg.learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    return model


def train(
    train_files: list[str] | str,
    eval_files: list[str] | str,
    tft_output: tft.TFTransformOutput,
    cfg: TrainerConfig,
) -> tuple[MergeCaptioner, list[str], dict[str, list[float]]]:
    """Fit the decoder; returns the model (best eval-loss weights), vocabulary and history."""
    keras.utils.set_random_seed(cfg.seed)
    vocabulary = load_vocabulary(tft_output)
    spec = tft_output.transformed_feature_spec()
    train_ds = caption_dataset(train_files, spec, cfg.max_length, cfg.batch_size, shuffle_seed=cfg.seed)
    eval_ds = caption_dataset(eval_files, spec, cfg.max_length, cfg.batch_size, shuffle_seed=None)
    model = build_model(len(vocabulary), cfg)
    fit_args: dict[str, Any] = {"epochs": cfg.epochs}
    if cfg.max_steps > 0:  # a capped run, e.g. a deliberately undertrained model
        train_ds = train_ds.repeat()
        fit_args = {"epochs": 1, "steps_per_epoch": cfg.max_steps}
    callbacks = [
        keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=cfg.early_stopping_patience, restore_best_weights=True
        ),
        _EpochLog(),
    ]
    started = time.monotonic()
    history = model.fit(train_ds, validation_data=eval_ds, callbacks=callbacks, verbose=0, **fit_args)
    log.info("trained %d epochs in %.1f s", len(history.history["loss"]), time.monotonic() - started)
    return model, vocabulary, {k: [float(v) for v in vals] for k, vals in history.history.items()}


def run_fn(fn_args: Any) -> None:
    """TFX Trainer entry: train on the train split, early-stop on eval, export for serving."""
    cfg = TrainerConfig(**fn_args.custom_config)
    tft_output = tft.TFTransformOutput(fn_args.transform_output)
    model, vocabulary, history = train(fn_args.train_files, fn_args.eval_files, tft_output, cfg)
    run_dir = Path(fn_args.model_run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / HISTORY_FILE).write_text(json.dumps(history, indent=2))
    backbone = get_backbone(cfg.backbone, cfg.weights, cfg.weights_path)
    started = time.monotonic()
    export_serving_model(
        feature_model=backbone.build_feature_model(),
        captioner=model,
        vocabulary=vocabulary,
        image_size=backbone.image_size,
        settings=DecodeSettings(cfg.max_length, cfg.beam_width, cfg.length_penalty, cfg.default_decoder),
        export_dir=fn_args.serving_model_dir,
    )
    log.info("exported the serving model to %s in %.1f s", fn_args.serving_model_dir, time.monotonic() - started)


class _EpochLog(keras.callbacks.Callback):
    """One log line per epoch with losses and time: progress on a long step."""

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._started = time.monotonic()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        log.info(
            "epoch %d: loss %.4f, val_loss %.4f, val_accuracy %.3f (%.1f s)",
            epoch + 1,
            logs.get("loss", float("nan")),
            logs.get("val_loss", float("nan")),
            logs.get("val_accuracy", float("nan")),
            time.monotonic() - self._started,
        )

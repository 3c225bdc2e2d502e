"""TFX Trainer entry point (`run_fn`): teacher-forced training, then the serving export.

Called by TFX's Trainer component (`run_fn="models.trainer.run_fn"` in
pipelines/pipeline.py) with the transformed examples and the transform graph. The
hyper-parameters arrive as `custom_config`: the config's sections as a plain dict
(`configs.config.TrainerSections`), rebuilt here with the profiles' typed loader, so the
run is fully described by the pipeline's exec properties.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any, Sequence

import keras
import numpy as np
import tensorflow as tf
import tensorflow_transform as tft

from configs.config import TrainerSections
from configs.console import Progress
from models.attention import AttentionCaptioner
from models.backbones import get_backbone
from models.contract import (
    TRAINING_FACTS_FILE,
    CAPTION_IDS_KEY,
    HISTORY_FILE,
    TRANSFORMED_FEATURES_KEY,
    TRANSFORMED_GRID_KEY,
    TRANSFORMED_IMAGE_ID_KEY,
    TRANSFORMED_MAP_KEY,
)
from models.decoder import MergeCaptioner
from models import scst
from models.epoch_bleu import EpochBleu, references_by_image
from models.export import DecodeSettings, export_serving_model
from models.finetune import TopAndDecoder, grids_of
from models.vocabulary import load_vocabulary, special_ids

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class CaptionRows:
    """Every caption as a row, pointing at its image; image arrays are stored once each.

    `images` maps a model input name (image_features [N, D], image_grid [N, L, C] as
    float16, half the memory: 6,000 lite0 grids are 0.75 GB; image_map [N, h, w, c] as
    float16, the fine-tuned top's input) to per-image arrays;
    `image_index[r]` is row r's image and `captions[r]` its token ids [max_length].
    """

    images: dict[str, np.ndarray]
    image_index: np.ndarray
    captions: np.ndarray


def load_caption_rows(
    file_pattern: list[str] | str,
    feature_spec: dict[str, Any],
    max_length: int,
    image_inputs: tuple[str, ...] = (TRANSFORMED_FEATURES_KEY,),
    grid_shape: tuple[int, int, int] | None = None,
    map_shape: tuple[int, int, int] | None = None,
) -> CaptionRows:
    """Reads the transformed examples: one per image, with all of its captions.

    Images are sorted by image_id, so the training order does not depend on how Beam
    sharded the examples: the same data and config train the same model on any runner.
    """
    patterns = [file_pattern] if isinstance(file_pattern, str) else list(file_pattern)
    files = sorted(f for pattern in patterns for f in tf.io.gfile.glob(pattern))
    if TRANSFORMED_GRID_KEY in image_inputs and TRANSFORMED_GRID_KEY not in feature_spec:
        raise ValueError(
            "the attention model needs the image grid, but the transformed examples have none "
            "(the FeatureExtractor ran with store_grid false)"
        )
    if TRANSFORMED_MAP_KEY in image_inputs and TRANSFORMED_MAP_KEY not in feature_spec:
        raise ValueError(
            "fine-tuning the backbone's top needs the map entering its first block, but the transformed "
            "examples have none (the FeatureExtractor ran without map_from_block)"
        )
    spec = {k: feature_spec[k] for k in (TRANSFORMED_IMAGE_ID_KEY, CAPTION_IDS_KEY, *image_inputs)}
    image_ids, captions_per_image = [], []
    images: dict[str, list[np.ndarray]] = {name: [] for name in image_inputs}
    batches = tf.data.TFRecordDataset(files, compression_type="GZIP").batch(256)
    for batch in batches.map(lambda serialized: tf.io.parse_example(serialized, spec)):
        ids = batch[CAPTION_IDS_KEY]
        ids = tf.sparse.to_dense(ids) if isinstance(ids, tf.SparseTensor) else ids
        ids = tf.reshape(ids, [tf.shape(ids)[0], -1, max_length]).numpy()  # [B, captions, L]
        image_ids.extend(batch[TRANSFORMED_IMAGE_ID_KEY].numpy())
        captions_per_image.extend(ids)
        if TRANSFORMED_FEATURES_KEY in images:
            images[TRANSFORMED_FEATURES_KEY].append(batch[TRANSFORMED_FEATURES_KEY].numpy())
        if TRANSFORMED_GRID_KEY in images:
            grid = batch[TRANSFORMED_GRID_KEY].numpy().astype(np.float16)
            images[TRANSFORMED_GRID_KEY].append(grid.reshape(len(grid), -1, grid_shape[-1]))
        if TRANSFORMED_MAP_KEY in images:
            block_map = batch[TRANSFORMED_MAP_KEY].numpy().astype(np.float16)
            images[TRANSFORMED_MAP_KEY].append(block_map.reshape(len(block_map), *map_shape))
    if not image_ids:
        raise ValueError(f"no examples in {files}")
    order = np.argsort(np.array(image_ids), kind="stable")
    index, rows = [], []
    for new_position, old_position in enumerate(order):
        for caption in captions_per_image[old_position]:
            if caption.any():  # rows of zeros pad images with fewer captions
                index.append(new_position)
                rows.append(caption)
    if not rows:
        raise ValueError(f"no captions in {files}")
    return CaptionRows(
        images={name: np.concatenate(parts)[order] for name, parts in images.items()},
        image_index=np.array(index, dtype=np.int32),
        captions=np.stack(rows),
    )


def caption_dataset(rows: CaptionRows, batch_size: int, shuffle_seed: int | None,
                    by_image: bool = False) -> tf.data.Dataset:
    """({image inputs, tokens[:-1]}, tokens[1:], mask) batches, one row per caption.

    The mask is the masked loss: padding after <end> carries no weight. Image arrays are
    gathered per batch, so they sit in memory once, not once per caption. `by_image`: a batch
    is batch_size // K images, each with all K of its captions (image-major; zero rows, which
    the mask drops, pad images with fewer), and the image inputs are the images', not the
    captions': models.finetune.TopAndDecoder repeats its grid to match, so the top runs once
    an image.
    """
    images = {name: tf.constant(array) for name, array in rows.images.items()}
    if by_image:
        image_index, captions = captions_by_image(rows)
        batch_size = max(1, batch_size // captions.shape[1])
    else:
        image_index, captions = rows.image_index, rows.captions
    ds = tf.data.Dataset.from_tensor_slices((image_index, captions))
    if shuffle_seed is not None:
        ds = ds.shuffle(len(image_index), seed=shuffle_seed, reshuffle_each_iteration=True)

    def teacher_forcing(image_index: tf.Tensor, ids: tf.Tensor):
        ids = tf.reshape(ids, [-1, tf.shape(ids)[-1]])  # by_image: [images, K, length] -> [images * K, length]
        targets = ids[:, 1:]
        mask = tf.cast(targets != 0, tf.float32)
        inputs = {name: tf.cast(tf.gather(array, image_index), tf.float32) for name, array in images.items()}
        return {**inputs, "tokens": ids[:, :-1]}, targets, mask

    return ds.batch(batch_size).map(teacher_forcing, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def captions_by_image(rows: CaptionRows) -> tuple[np.ndarray, np.ndarray]:
    """The images that have captions, and their captions as [images, K, length] in row order,
    K the most any image has; zero rows pad the others."""
    order = np.argsort(rows.image_index, kind="stable")  # by image, row order kept within one
    images, first, counts = np.unique(rows.image_index[order], return_index=True, return_counts=True)
    stacked = np.zeros((len(images), counts.max(), rows.captions.shape[1]), dtype=rows.captions.dtype)
    slot_in_image = np.arange(len(order)) - np.repeat(first, counts)
    stacked[np.repeat(np.arange(len(images)), counts), slot_in_image] = rows.captions[order]
    return images, stacked


def build_model(vocab_size: int, cfg: TrainerSections) -> keras.Model:
    """The configured decoder, compiled for teacher forcing with the masked loss."""
    optimizer = keras.optimizers.Adam(cfg.train.learning_rate)
    if cfg.model.architecture == "attention":
        m = cfg.model
        model = AttentionCaptioner(
            vocab_size, m.embedding_dim, m.hidden_dim, m.dropout, m.attention_dim, m.attention_coverage
        )
        # Unrolled over every caption position: clip, as is usual for recurrent models.
        optimizer = keras.optimizers.Adam(cfg.train.learning_rate, clipnorm=5.0)
    else:
        model = MergeCaptioner(vocab_size, cfg.model.embedding_dim, cfg.model.hidden_dim, cfg.model.dropout)
    compile_for_teacher_forcing(model, optimizer)
    return model


def compile_for_teacher_forcing(model: keras.Model, optimizer: keras.optimizers.Optimizer) -> None:
    """The masked cross-entropy on logits and token accuracy: the decoder's, and the same for a
    model that trains it with the backbone's top (models/finetune.py)."""
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )


@dataclasses.dataclass
class Trained:
    """What `train` returns: the decoder (its best epoch's weights), the vocabulary, the
    history, and, when the backbone's top was fine-tuned, the feature model that carries it
    (None: export the stock backbone)."""

    model: keras.Model
    vocabulary: list[str]
    history: dict[str, list]
    feature_model: keras.Model | None = None


def train(
    train_files: list[str] | str,
    eval_files: list[str] | str,
    tft_output: tft.TFTransformOutput,
    cfg: TrainerSections,
    extra_callbacks: Sequence[keras.callbacks.Callback] = (),
) -> Trained:
    """Fit the decoder (and, with `features.finetune_from_block`, the backbone's top).

    With `scst.epochs` > 0, self-critical training follows (models/scst.py) on the grids of
    the (fine-tuned) backbone, which stays as the first stage left it; its per-epoch
    values join the history, numbered on after the cross-entropy epochs (None before).
    `extra_callbacks` run after the project's own (e.g. live MLflow metrics, added by the
    Trainer's wrapper in components/trainer), in both stages."""
    keras.utils.set_random_seed(cfg.train.seed)
    vocabulary = load_vocabulary(tft_output)
    spec = tft_output.transformed_feature_spec()
    block = cfg.features.finetune_from_block
    feature_model = top = map_shape = None
    if block:  # built before the decoder, as bench/finetune_probe does: the same initial weights
        backbone = get_backbone(cfg.features.backbone, cfg.features.weights, cfg.features.weights_path)
        feature_model, bottom, top = backbone.build_split_models(block)
        map_shape = tuple(int(d) for d in bottom.output.shape[1:])
    model = build_model(len(vocabulary), cfg)
    image_args = {
        "image_inputs": (TRANSFORMED_MAP_KEY,) if block else model.image_inputs,
        "grid_shape": get_backbone(cfg.features.backbone, weights=None).grid_shape,
        "map_shape": map_shape,
    }
    eval_rows = load_caption_rows(eval_files, spec, cfg.text.max_length, **image_args)
    train_rows = load_caption_rows(train_files, spec, cfg.text.max_length, **image_args)
    by_image = cfg.train.batch_by_image
    train_ds = caption_dataset(train_rows, cfg.train.batch_size, shuffle_seed=cfg.train.seed, by_image=by_image)
    eval_ds = caption_dataset(eval_rows, cfg.train.batch_size, shuffle_seed=None, by_image=by_image)
    fitted = model
    if block:
        fitted = TopAndDecoder(top, model, cfg.train.backbone_learning_rate)
        compile_for_teacher_forcing(fitted, model.optimizer)
    fit_args: dict[str, Any] = {"epochs": cfg.train.epochs}
    if cfg.train.max_steps > 0:  # a capped run, e.g. a deliberately undertrained model
        train_ds = train_ds.repeat()
        fit_args = {"epochs": 1, "steps_per_epoch": cfg.train.max_steps}

    def eval_scorer(images: dict[str, np.ndarray]) -> EpochBleu:
        """Greedy BLEU and CIDEr-D of the eval images, given as the decoder reads them."""
        references = references_by_image(eval_rows.image_index, eval_rows.captions, vocabulary)
        return EpochBleu(images, references, vocabulary, cfg.text.max_length)

    # The config refuses select_by other than val_loss with a fine-tuned top (its maps are no grids).
    epoch_bleu = eval_scorer(eval_rows.images) if cfg.train.select_by != "val_loss" else None
    epoch_log = _EpochLog()
    started = time.monotonic()
    callbacks = [*fit_callbacks(cfg, epoch_bleu), epoch_log, _BatchProgress(), *extra_callbacks]
    history = fitted.fit(train_ds, validation_data=eval_ds, callbacks=callbacks, verbose=0, **fit_args)
    del train_ds, eval_ds
    log.info("trained %d epochs in %.1f s", len(history.history["loss"]), time.monotonic() - started)
    result = {
        **{k: [float(v) for v in vals] for k, vals in history.history.items()},
        "epoch_seconds": epoch_log.seconds,
    }
    if cfg.scst.epochs:
        train_images, eval_images = train_rows.images, eval_rows.images
        if block:  # the top is frozen from here on: its grids are computed once
            started = time.monotonic()
            train_images, eval_images = (
                {TRANSFORMED_GRID_KEY: grids_of(top, images[TRANSFORMED_MAP_KEY])} for images in (train_images, eval_images)
            )
            log.info("the fine-tuned top's grids of %d + %d images in %.1f s", len(train_images[TRANSFORMED_GRID_KEY]),
                     len(eval_images[TRANSFORMED_GRID_KEY]), time.monotonic() - started)
        scst_images = scst.ScstImages.of(train_images, train_rows.image_index, train_rows.captions)
        del train_rows, train_images
        if epoch_bleu is None:
            epoch_bleu = eval_scorer(eval_images)
        epochs = len(result["loss"])
        scst_history, _ = scst.train_self_critical(
            model, scst_images, lambda: epoch_bleu.scores(model), cfg.scst, special_ids(vocabulary),
            cfg.train.seed, callbacks=extra_callbacks, first_epoch=epochs,
        )
        result = join_stages(result, scst_history, epochs)
    return Trained(model, vocabulary, result, feature_model)


def join_stages(first: dict[str, list], second: dict[str, list], first_epochs: int) -> dict[str, list]:
    """One history over both stages' epochs: a key of the second stage only is None over the
    first stage's `first_epochs` epochs, so list position i is epoch i + 1 for every key."""
    joined = dict(first)
    for key, values in second.items():
        earlier = list(first.get(key) or [])
        joined[key] = earlier + [None] * (first_epochs - len(earlier)) + list(values)
    return joined


def fit_callbacks(cfg: TrainerSections, epoch_bleu: keras.callbacks.Callback | None = None) -> list[keras.callbacks.Callback]:
    """Early stopping (best weights restored) on eval loss or, with `select_by` a BLEU score,
    on that greedy eval BLEU from `epoch_bleu`; and, if configured, LR decay on eval loss."""
    if cfg.train.select_by == "val_loss":
        callbacks: list[keras.callbacks.Callback] = []
        monitor, mode = "val_loss", "min"
    elif epoch_bleu is None:
        raise ValueError(f"train.select_by {cfg.train.select_by!r} needs the EpochBleu callback")
    else:
        callbacks, monitor, mode = [epoch_bleu], f"val_{cfg.train.select_by}", "max"
    callbacks.append(
        keras.callbacks.EarlyStopping(
            monitor=monitor, mode=mode, patience=cfg.train.early_stopping_patience, restore_best_weights=True
        )
    )
    if cfg.train.lr_decay_factor < 1.0:
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor="val_loss",
                factor=cfg.train.lr_decay_factor,
                patience=1,
                min_delta=cfg.train.lr_decay_min_delta,
            )
        )
    return callbacks


def run_fn(fn_args: Any, extra_callbacks: Sequence[keras.callbacks.Callback] = ()) -> None:
    """TFX Trainer entry: train on the train split, early-stop on eval, export for serving."""
    cfg = TrainerSections.from_custom_config(fn_args.custom_config)
    tft_output = tft.TFTransformOutput(fn_args.transform_output)
    trained = train(fn_args.train_files, fn_args.eval_files, tft_output, cfg, extra_callbacks)
    model, vocabulary, history = trained.model, trained.vocabulary, trained.history
    run_dir = Path(fn_args.model_run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / HISTORY_FILE).write_text(json.dumps(history, indent=2))
    backbone = get_backbone(cfg.features.backbone, cfg.features.weights, cfg.features.weights_path)
    started = time.monotonic()
    export_serving_model(
        feature_model=trained.feature_model or backbone.build_feature_model(),
        captioner=model,
        vocabulary=vocabulary,
        image_size=backbone.image_size,
        settings=DecodeSettings(
            cfg.text.max_length,
            cfg.decode.beam_width,
            cfg.decode.length_penalty,
            cfg.decode.default,
            cfg.decode.no_repeat_ngram_size,
        ),
        export_dir=fn_args.serving_model_dir,
        max_image_pixels=cfg.serving.max_image_pixels,
    )
    log.info("exported the serving model to %s in %.1f s", fn_args.serving_model_dir, time.monotonic() - started)
    write_training_facts(fn_args.serving_model_dir, {"vocabulary_size": len(vocabulary), "epochs_trained": len(history["loss"])})


def write_training_facts(serving_model_dir: str | Path, facts: dict[str, Any]) -> None:
    """Adds `facts` to the model's training facts (TRAINING_FACTS_FILE), which the model card shows."""
    path = Path(serving_model_dir) / TRAINING_FACTS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    known = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**known, **facts}, indent=2, sort_keys=True) + "\n")


class _BatchProgress(keras.callbacks.Callback):
    """The batches of the running epoch: a bar with rate and ETA on a terminal, a line every
    30 s elsewhere (configs/console.py)."""

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        epochs = self.params.get("epochs")
        self._progress = Progress(f"epoch {epoch + 1}/{epochs}", self.params.get("steps"), "batches", log)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self._progress.update(1)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self._progress.close()


class _EpochLog(keras.callbacks.Callback):
    """One log line per epoch with losses and time: progress on a long step."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []  # wall time of each epoch, evaluation included

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._started = time.monotonic()
        self._learning_rate = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        self.seconds.append(round(time.monotonic() - self._started, 3))
        log.info(
            "epoch %d: loss %.4f, val_loss %.4f, val_accuracy %.3f, learning rate %.2g (%.1f s)",
            epoch + 1,
            logs.get("loss", float("nan")),
            logs.get("val_loss", float("nan")),
            logs.get("val_accuracy", float("nan")),
            self._learning_rate,
            time.monotonic() - self._started,
        )

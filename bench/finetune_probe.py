"""Does fine-tuning the backbone's upper blocks help the captions? A probe of the cross-entropy stage.

Run `python -m bench.finetune_probe --examples DIR --transform-graph DIR [--data
../shared/flickr8k] [--block 15] [--top-learning-rate 1e-4 | --frozen] [--profile
flickr8k_lite0] [--set KEY=VALUE] [--epochs 4] [--coco-each] [--ce-weights FILE.npz]
[--scst-top-learning-rate 1e-5]`, with a pipeline run's
transformed examples (the folder holding Split-train and Split-dev) and Transform graph:
their captions and vocabulary, so the probe trains on exactly the rows the Trainer did.

The backbone is cut at `--block` (models.backbones.efficientnet_lite.split_at_block): the
bottom runs once per image (as the feature step would) and its maps are kept in memory; the
top (those blocks and the head, BatchNormalization statistics frozen) runs in every training
step with its own Adam at `--top-learning-rate`, under the profile's decoder, which trains
as the Trainer's does (its optimizer, loss, batch size, seed and caption order). `--frozen`
trains the decoder only, over the same code and from the same initial weights: the
side-by-side baseline. Each epoch prints its loss and val_loss; then the dev split's greedy
BLEU-1..4 and CIDEr-D (models.epoch_bleu, the scores the SCST stage starts from). With a
profile that has `scst.epochs` (flickr8k_lite0_scst), its self-critical stage follows on the
top's grids (the top frozen as the first stage left it), and the dev split's greedy
captions are scored by coco-caption too (`--coco-each`: the start and every epoch, not only
the kept one); `--scst-top-learning-rate` trains the top in that stage too, on the maps
(models.finetune.CaptionerOnMaps). `--ce-weights` saves the first stage's weights, or
loads them and skips it, so SCST variants start from one set of weights. With a fine-tuning
profile (flickr8k_lite0_finetune), `--set train.batch_by_image=true` batches the first stage
by image, as the Trainer then does: the top runs once an image, not once a caption. No export;
nothing else written. The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from configs.cli import add_config_arguments, config_from_args

REPO = Path(__file__).resolve().parent.parent


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.finetune_probe", description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=Path, required=True, help="a run's transformed examples (with Split-train, Split-dev)")
    parser.add_argument("--transform-graph", type=Path, required=True, help="the same run's Transform graph")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "flickr8k", help="the Flickr8k photos")
    add_config_arguments(parser, default_profile="flickr8k_lite0")  # the decoder's and training's settings
    parser.add_argument("--block", type=int, default=15, help="fine-tune from this block of the backbone on (default 15)")
    parser.add_argument("--top-learning-rate", type=float, default=1e-4, help="Adam's rate for the backbone's top (default 1e-4)")
    parser.add_argument("--frozen", action="store_true", help="train the decoder only (the baseline)")
    parser.add_argument("--epochs", type=int, default=4, help="cross-entropy epochs (default 4)")
    parser.add_argument("--limit", type=int, default=0, help="only the first N images of each split (a quick check)")
    parser.add_argument("--coco-each", action="store_true", help="coco-caption scores of every SCST epoch (about 20 s each)")
    parser.add_argument("--ce-weights", type=Path, help="the cross-entropy stage's weights (.npz): loaded if the file "
                        "exists (the stage skipped), else saved there after it; for SCST variants on one start")
    parser.add_argument("--scst-top-learning-rate", type=float,
                        help="train the top in the SCST stage too, with its own Adam at this rate (default: frozen)")
    return parser


def image_ids(files: list[str]) -> list[bytes]:
    """The examples' image ids, in file order."""
    import tensorflow as tf

    from models.contract import TRANSFORMED_IMAGE_ID_KEY

    spec = {TRANSFORMED_IMAGE_ID_KEY: tf.io.FixedLenFeature([], tf.string)}
    ds = tf.data.TFRecordDataset(files, compression_type="GZIP").batch(512)
    return [i for batch in ds.map(lambda s: tf.io.parse_example(s, spec)) for i in batch[TRANSFORMED_IMAGE_ID_KEY].numpy()]


def largest_relative_change(weights, before) -> float:
    """The largest |w - before| / |before| over a model's weight tensors (Frobenius norms)."""
    import numpy as np

    return max(float(np.linalg.norm(w.numpy() - b) / (np.linalg.norm(b) + 1e-12)) for w, b in zip(weights, before))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    import keras
    import numpy as np
    import tensorflow as tf
    import tensorflow_transform as tft

    from configs.config import TrainerSections
    from data.layout import scan_layout
    from models.backbones.efficientnet_lite import build_feature_model, split_at_block
    from models.contract import METEOR_METRIC, TRANSFORMED_GRID_KEY, TRANSFORMED_MAP_KEY
    from models.epoch_bleu import EpochBleu, references_by_image
    from models.finetune import CaptionerOnMaps, TopAndDecoder, grids_of
    from models.images import decode_images
    from models.trainer import CaptionRows, build_model, caption_dataset, compile_for_teacher_forcing, load_caption_rows
    from models import scst
    from models.coco_caption import coco_caption_scores
    from models.vocabulary import load_vocabulary, special_ids

    cfg = TrainerSections.of(config_from_args(args))
    keras.utils.set_random_seed(cfg.train.seed)
    tft_output = tft.TFTransformOutput(str(args.transform_graph))
    vocabulary = load_vocabulary(tft_output)
    spec = tft_output.transformed_feature_spec()
    feature_model = build_feature_model(cfg.features.backbone, cfg.features.weights, cfg.features.weights_path)
    bottom, top = split_at_block(feature_model, args.block)
    size = feature_model.input_shape[1]
    paths_and_captions = {r.image_id: (r.path, r.captions)
                          for records in scan_layout(args.data, ["train", "dev"]).records.values() for r in records}
    bottom_fn = tf.function(lambda encoded: bottom(decode_images(encoded, size), training=False))

    def rows_of(split: str) -> tuple[list[str], CaptionRows]:
        files = sorted(tf.io.gfile.glob(str(args.examples / f"Split-{split}" / "*")))
        rows = load_caption_rows(files, spec, cfg.text.max_length, image_inputs=())
        ids = sorted(i.decode() for i in image_ids(files))  # load_caption_rows' image order
        if args.limit:
            keep = rows.image_index < args.limit
            rows, ids = CaptionRows({}, rows.image_index[keep], rows.captions[keep]), ids[: args.limit]
        started, maps = time.monotonic(), []
        for start in range(0, len(ids), 32):
            encoded = [Path(paths_and_captions[i][0]).read_bytes() for i in ids[start : start + 32]]
            maps.append(bottom_fn(tf.constant(encoded)).numpy().astype(np.float16))
        print(f"{split}: {len(ids)} images, {len(rows.captions)} captions; maps {maps[0].shape[1:]} in "
              f"{time.monotonic() - started:.0f} s", flush=True)
        return ids, CaptionRows({TRANSFORMED_MAP_KEY: np.concatenate(maps)}, rows.image_index, rows.captions)

    (_, train_rows), (dev_rows_ids, dev_rows) = rows_of("train"), rows_of("dev")
    captioner = build_model(len(vocabulary), cfg)
    model = TopAndDecoder(top, captioner, None if args.frozen else args.top_learning_rate)
    compile_for_teacher_forcing(model, captioner.optimizer)
    history = {"loss": [], "val_loss": [], "seconds": []}

    class EpochLine(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.monotonic()

        def on_epoch_end(self, epoch, logs=None):
            history["loss"].append(round(float(logs["loss"]), 4))
            history["val_loss"].append(round(float(logs["val_loss"]), 4))
            history["seconds"].append(round(time.monotonic() - self.started, 1))
            print(f"epoch {epoch + 1}: loss {logs['loss']:.4f}, val_loss {logs['val_loss']:.4f} "
                  f"({history['seconds'][-1]:.0f} s)", flush=True)

    before = [w.numpy() for w in top.weights]
    by_image = cfg.train.batch_by_image
    dev_dataset = caption_dataset(dev_rows, cfg.train.batch_size, shuffle_seed=None, by_image=by_image)
    if args.ce_weights and args.ce_weights.exists():
        model(next(iter(dev_dataset))[0])  # builds the weights before they are set
        with np.load(args.ce_weights) as saved:
            model.set_weights([saved[f"arr_{i}"] for i in range(len(saved.files))])
        print(f"cross-entropy stage: the weights of {args.ce_weights}", flush=True)
    else:
        train_dataset = caption_dataset(train_rows, cfg.train.batch_size, shuffle_seed=cfg.train.seed, by_image=by_image)
        model.fit(train_dataset, epochs=args.epochs,
                  validation_data=dev_dataset, callbacks=[EpochLine()], verbose=0)
        if args.ce_weights:
            np.savez(args.ce_weights, *model.get_weights())
    moved = largest_relative_change(top.weights, before)
    print(f"the top's weights moved by at most {moved:.2%} of their norm (a layer's)")

    def rows_grids(rows: CaptionRows) -> np.ndarray:
        return grids_of(top, rows.images[TRANSFORMED_MAP_KEY])

    references = references_by_image(dev_rows.image_index, dev_rows.captions, vocabulary)
    dev_scorer = EpochBleu({TRANSFORMED_GRID_KEY: rows_grids(dev_rows)}, references, vocabulary, cfg.text.max_length)
    side = "frozen" if args.frozen else f"blocks {args.block}.. at {args.top_learning_rate:g}"
    scores = dev_scorer.scores(captioner)
    print(f"{side}, cross-entropy: dev greedy BLEU-4 {scores['bleu_4']:.4f}, BLEU-1 {scores['bleu_1']:.4f}, "
          f"CIDEr-D {scores['cider_d']:.4f}", flush=True)
    result = {"side": side, "profile": args.profile, "scst_top_learning_rate": args.scst_top_learning_rate,
              "block": args.block, "history": history, "top_moved": round(moved, 4),
              "dev_greedy": {k: round(v, 4) for k, v in scores.items()}}
    if cfg.scst.epochs:  # the profile's second stage; the top frozen as it came out of the first, or trained on
        on_maps = bool(args.scst_top_learning_rate)

        def inputs_of(rows: CaptionRows) -> dict[str, np.ndarray]:
            return {TRANSFORMED_MAP_KEY: rows.images[TRANSFORMED_MAP_KEY]} if on_maps else {TRANSFORMED_GRID_KEY: rows_grids(rows)}

        scst_model = CaptionerOnMaps(top, captioner) if on_maps else captioner
        scst_scorer = EpochBleu(inputs_of(dev_rows), references, vocabulary, cfg.text.max_length) if on_maps else dev_scorer
        train_images = scst.ScstImages.of(inputs_of(train_rows), train_rows.image_index, train_rows.captions)
        raw = {str(position): list(paths_and_captions[image_id][1]) for position, image_id in enumerate(dev_rows_ids)}
        epochs = []  # with --coco-each: both scorers' dev scores at the start and after each epoch

        def epoch_scores() -> dict[str, float]:
            scores = scst_scorer.scores(scst_model)
            if args.coco_each:
                coco = coco_caption_scores(scst_scorer.captions(), raw)
                epochs.append({**scores, **coco})
                print(f"SCST epoch {len(epochs) - 1}: dev greedy CIDEr-D {scores['cider_d']:.4f}; coco-caption BLEU-4 "
                      f"{coco['coco_bleu_4']:.4f}, METEOR {coco[METEOR_METRIC]:.4f}, CIDEr-D {coco['coco_cider_d']:.4f}",
                      flush=True)
            return scores

        ce_top = [w.numpy() for w in top.weights]
        scst_history, kept = scst.train_self_critical(scst_model, train_images, epoch_scores, cfg.scst,
                                                      special_ids(vocabulary), cfg.train.seed,
                                                      top_learning_rate=args.scst_top_learning_rate)
        scores = scst_scorer.scores(scst_model)
        coco = coco_caption_scores(scst_scorer.captions(), raw)
        print(f"{side}, after SCST (epoch {kept} kept): dev greedy BLEU-4 {scores['bleu_4']:.4f}, CIDEr-D "
              f"{scores['cider_d']:.4f}; coco-caption BLEU-4 {coco['coco_bleu_4']:.4f}, METEOR {coco[METEOR_METRIC]:.4f}, "
              f"CIDEr-D {coco['coco_cider_d']:.4f}", flush=True)
        scst_moved = largest_relative_change(top.weights, ce_top)
        print(f"the SCST stage moved the top's weights by at most {scst_moved:.2%} of their norm", flush=True)
        result.update({"scst_top_moved": round(scst_moved, 4), "scst_kept": kept,
                       "scst": {k: [round(v, 4) for v in vals] for k, vals in scst_history.items()},
                       "scst_epochs": [{k: round(v, 4) for k, v in e.items()} for e in epochs],
                       "scst_dev_greedy": {k: round(v, 4) for k, v in scores.items()},
                       "scst_coco_greedy": {k: round(v, 4) for k, v in coco.items()}})
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

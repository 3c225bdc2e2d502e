"""Beam width and length penalty of one trained model, scored side by side on a split.

Run `python -m bench.decode_sweep --model DIR --transform-graph DIR --profile flickr8k_lite0
[--widths 1,3,5] [--penalties 0,0.7,1.0,1.3] [--no-repeat-ngram 0,2,3] [--end-biases 0,1,2] [--coco]`. DIR: a Trainer's serving SavedModel and
the Transform graph of the same run. Decoding settings do not change training, so rather
than retraining per setting, the decoder's weights are read back from the SavedModel into
the same Keras decoder class (checked variable by variable, by order and shape), the
backbone features of the split are computed once, and `models.decoding` (the code the
export uses) decodes them with every setting. Scores are the pipeline's own: corpus
BLEU-1..4 and CIDEr-D; with `--coco` also coco-caption's BLEU-4, METEOR and CIDEr-D. Width 1
is greedy decoding. An end bias b > 0 lowers <end>'s logit by b at every step: longer
captions, which METEOR (recall-weighted) might prefer.

The settings are chosen on the split they are scored on (the dev split: the test split of
../shared/flickr8k is held out), so the best row is slightly optimistic; the README says so.
The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    from data.layout import scan_layout
    from models.coco_caption import coco_caption_scores
    from models.decoding import beam_search_decode, greedy_decode
    from models.export import CaptionPipeline, DecodeSettings
    from models.metrics import corpus_bleu_scores, corpus_cider

    cfg, vocabulary, backbone, captioner = load_trained_decoder(args.profile, args.model, args.transform_graph)
    records = scan_layout(Path(args.data), [args.split]).records[args.split]
    if args.limit:
        records = records[: args.limit]

    # The export's own image and text paths; only the decoding settings vary below.
    settings = DecodeSettings(cfg.text.max_length, cfg.decode.beam_width, cfg.decode.length_penalty, cfg.decode.default)
    pipeline = CaptionPipeline(backbone.build_feature_model(), captioner, vocabulary, backbone.image_size, settings)
    started = time.monotonic()
    parts = [
        pipeline.features(tf.constant([Path(r.path).read_bytes() for r in records[i : i + 32]]))
        for i in range(0, len(records), 32)
    ]
    inputs = {name: tf.concat([p[name] for p in parts], axis=0) for name in captioner.image_inputs}
    logging.info("features of %d images in %.1f s", len(records), time.monotonic() - started)

    ids = pipeline.ids
    references = {r.image_id: list(r.captions) for r in records}
    rows = []
    settings_grid = [
        (width, penalty, n, bias)
        for bias in args.end_biases
        for n in args.no_repeat_ngram
        for width in args.widths
        for penalty in (args.penalties if width > 1 else [0.0])
    ]
    for width, penalty, n, bias in settings_grid:
        decoder = EndBiased(captioner, ids["end_id"], bias) if bias else captioner
        if width == 1:
            fn = tf.function(lambda x, d=decoder, n=n: greedy_decode(
                d, x, max_length=cfg.text.max_length, no_repeat_ngram_size=n, **ids)[0])
        else:
            fn = tf.function(lambda x, d=decoder, w=width, p=penalty, n=n: beam_search_decode(
                d, x, max_length=cfg.text.max_length, beam_width=w, length_penalty=p,
                no_repeat_ngram_size=n, **ids)[0][:, 0])
        started = time.monotonic()
        hypotheses = {}
        for i in range(0, len(records), 100):
            batch = {name: t[i : i + 100] for name, t in inputs.items()}
            for record, caption in zip(records[i : i + 100], pipeline.to_text(fn(batch)).numpy()):
                hypotheses[record.image_id] = caption.decode()
        scores = corpus_bleu_scores(hypotheses, references)
        row = {
            "beam_width": width,
            "length_penalty": penalty,
            "no_repeat_ngram_size": n,
            "end_bias": bias,
            **{k: round(v, 4) for k, v in scores.items()},
            "cider": round(corpus_cider(hypotheses, references), 4),
            **({k: round(v, 4) for k, v in coco_caption_scores(hypotheses, references).items()} if args.coco else {}),
            "mean_words": round(sum(len(h.split()) for h in hypotheses.values()) / len(hypotheses), 2),
            "seconds": round(time.monotonic() - started, 1),
        }
        rows.append(row)
        logging.info("%s", row)
    keys = ("beam_width", "length_penalty", "no_repeat_ngram_size", "end_bias", "bleu_1", "bleu_2", "bleu_3", "bleu_4", "cider",
            *(("coco_bleu_4", "meteor", "coco_cider_d") if args.coco else ()), "mean_words")
    print(f"\n{args.split} split, {len(records)} images, {args.model}")
    print(" | ".join(keys))
    for row in rows:
        print(" | ".join(str(row[k]) for k in keys))
    print(json.dumps({"model": args.model, "split": args.split, "rows": rows}))
    return 0


def load_trained_decoder(profile: str, export_dir: str, transform_graph: str):
    """(training sections, vocabulary, backbone, Keras decoder with the SavedModel's weights)
    of a model trained with `profile`; `transform_graph` is the same run's, for its vocabulary."""
    import tensorflow as tf
    import tensorflow_transform as tft

    from configs import load_config
    from configs.config import TrainerSections
    from models.backbones import get_backbone
    from models.trainer import build_model
    from models.vocabulary import load_vocabulary

    cfg = TrainerSections.of(load_config(profile))
    vocabulary = load_vocabulary(tft.TFTransformOutput(transform_graph))
    backbone = get_backbone(cfg.features.backbone, cfg.features.weights, cfg.features.weights_path)
    h, w, c = backbone.grid_shape
    dummy = {"image_features": tf.zeros([1, backbone.feature_dim]), "image_grid": tf.zeros([1, h * w, c])}
    captioner = build_model(len(vocabulary), cfg)
    captioner({**{k: dummy[k] for k in captioner.image_inputs}, "tokens": tf.zeros([1, 2], tf.int64)})  # builds it
    return cfg, vocabulary, backbone, _load_decoder(captioner, str(export_dir))


def _load_decoder(captioner, export_dir: str):
    """The Keras decoder with the SavedModel's weights, matched by order and shape."""
    import tensorflow as tf

    loaded = tf.saved_model.load(export_dir)
    # The decoder's variables, whatever number Keras appended to its name in either process
    # (a second decoder built here is "attention_captioner_1").
    decoder_name = re.compile(rf"{re.escape(re.sub(r'_[0-9]+$', '', captioner.name))}(_[0-9]+)?/")
    saved = [v for v in loaded.variables if decoder_name.match(v.name)]
    mine = captioner.trainable_variables
    if not mine:
        raise SystemExit("the decoder has no variables: it was not built")
    if [tuple(v.shape) for v in saved] != [tuple(v.shape) for v in mine]:
        raise SystemExit(
            f"{export_dir}: the saved decoder's variables {[tuple(v.shape) for v in saved]} do not match "
            f"{type(captioner).__name__} from the profile {[tuple(v.shape) for v in mine]}"
        )
    for target, source in zip(mine, saved):
        target.assign(source)
    return captioner


class EndBiased:
    """A decoder whose every step scores <end> `bias` lower in logits (a bias > 0 asks for
    longer captions): to measure whether length, which METEOR's recall rewards, pays."""

    def __init__(self, captioner, end_id: int, bias: float):
        import tensorflow as tf

        self.captioner = captioner
        self.vocab_size = captioner.vocab_size
        self.offset = -bias * tf.one_hot(end_id, captioner.vocab_size)

    def encode_image(self, inputs):
        return self.captioner.encode_image(inputs)

    def initial_state(self, image):
        return self.captioner.initial_state(image)

    def step(self, tokens, states, image):
        logits, states = self.captioner.step(tokens, states, image)
        return logits + self.offset, states


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="the Trainer's serving SavedModel dir")
    parser.add_argument("--transform-graph", required=True, help="the Transform graph dir of the same run")
    parser.add_argument("--profile", default="flickr8k_lite0", help="the profile the model was trained with")
    parser.add_argument("--data", default=os.environ.get("CAPTIONER_DATA_DIR", "../shared/flickr8k"))
    parser.add_argument("--split", default="dev")
    parser.add_argument("--limit", type=int, default=0)
    parser.add_argument("--widths", type=lambda s: [int(x) for x in s.split(",")], default=[1, 3, 5])
    parser.add_argument("--penalties", type=lambda s: [float(x) for x in s.split(",")], default=[0.0, 0.7, 1.0, 1.3])
    parser.add_argument("--no-repeat-ngram", type=lambda s: [int(x) for x in s.split(",")], default=[0],
                        help="decode.no_repeat_ngram_size values (0: off)")
    parser.add_argument("--end-biases", type=lambda s: [float(x) for x in s.split(",")], default=[0.0],
                        help="subtract this from <end>'s logit at every step (0: the model as trained)")
    parser.add_argument("--coco", action="store_true", help="also score with coco-caption (METEOR; needs java)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())

"""Does an ensemble of trained decoders pay? Its captions and cost against each member's, in one run.

Run `python -m bench.ensemble --member PROFILE=SAVEDMODEL=TRANSFORM_GRAPH --member ...`
(two or more; each a pipeline run's serving SavedModel and Transform graph, with the profile
it was trained with). Each member's decoder is read back from its SavedModel into the
profile's Keras class (bench/decode_sweep.py), its backbone features of the split are
computed once, and `models.decoding` decodes with the first member's profile settings
(greedy, then its beam search): each member alone, then all of them as one
`models.ensemble.EnsembleCaptioner` (the mean of their per-step probabilities). Scores are
the pipeline's own (NLTK corpus BLEU, CIDEr-D) and the coco-caption toolkit's the papers
report (`coco_*`, METEOR; Java; `--no-coco` skips it). Cost: each member's backbone and every
decoder's loop for one image a call (p50 over `--latency-images`), one after the other in
this process; an ensemble's single-image caption costs every member's backbone plus its
loop. The members must share the vocabulary (the same data and text settings). The last
line is JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    from bench.decode_sweep import load_trained_decoder
    from data.layout import scan_layout
    from models.coco_caption import coco_caption_scores
    from models.contract import METEOR_METRIC
    from models.decoding import beam_search_decode, greedy_decode
    from models.ensemble import EnsembleCaptioner, member_key
    from models.export import CaptionPipeline, DecodeSettings
    from models.metrics import corpus_bleu_scores, corpus_cider

    records = scan_layout(Path(args.data), [args.split]).records[args.split]
    if args.limit:
        records = records[: args.limit]
    images = [Path(r.path).read_bytes() for r in records]
    references = {r.image_id: list(r.captions) for r in records}

    members, inputs, backbone_ms, vocabulary, first_cfg = [], {}, [], None, None
    for index, (profile, model_dir, transform_graph) in enumerate(args.member):
        cfg, member_vocabulary, backbone, captioner = load_trained_decoder(profile, model_dir, transform_graph)
        first_cfg = first_cfg or cfg
        if vocabulary is not None and list(member_vocabulary) != list(vocabulary):
            raise SystemExit(f"{model_dir}: its vocabulary differs from the first member's; an ensemble needs one vocabulary")
        vocabulary = member_vocabulary
        d = cfg.decode
        pipeline = CaptionPipeline(backbone.build_feature_model(), captioner, vocabulary, backbone.image_size,
                                   DecodeSettings(cfg.text.max_length, d.beam_width, d.length_penalty, d.default))
        features = tf.function(pipeline.features, input_signature=[tf.TensorSpec([None], tf.string)])
        started = time.monotonic()
        parts = [features(tf.constant(images[i : i + 32])) for i in range(0, len(images), 32)]
        for name in captioner.image_inputs:
            inputs[member_key(index, name)] = tf.concat([p[name] for p in parts], axis=0)
        logging.info("member %d (%s, %s): features of %d images in %.1f s", index, profile, cfg.features.backbone,
                     len(images), time.monotonic() - started)
        backbone_ms.append(_p50_ms(lambda i, f=features: f(tf.constant(images[i : i + 1])), args.latency_images))
        members.append((f"member {index} ({profile})", captioner, index))
    ids, to_text = pipeline.ids, pipeline.to_text
    d, max_length = first_cfg.decode, first_cfg.text.max_length
    ensemble = EnsembleCaptioner([captioner for _, captioner, _ in members])

    candidates = [(name, EnsembleCaptioner([captioner]), [index]) for name, captioner, index in members]
    candidates.append((f"ensemble of {len(members)}", ensemble, list(range(len(members)))))
    rows = []
    for name, model, used in candidates:
        model_inputs = {member_key(j, k.split("/", 1)[1]): inputs[k] for j, i in enumerate(used)
                        for k in inputs if k.startswith(f"m{i}/")}
        # Any batch size, as the exported signatures take it.
        signature = [{k: tf.TensorSpec([None, *t.shape[1:]], t.dtype) for k, t in model_inputs.items()}]
        for decoder in ("greedy", "beam_search"):
            if decoder == "greedy":
                fn = tf.function(lambda x, m=model: greedy_decode(
                    m, x, max_length=max_length, no_repeat_ngram_size=d.no_repeat_ngram_size, **ids)[0],
                    input_signature=signature)
            else:
                fn = tf.function(lambda x, m=model: beam_search_decode(
                    m, x, max_length=max_length, beam_width=d.beam_width, length_penalty=d.length_penalty,
                    no_repeat_ngram_size=d.no_repeat_ngram_size, **ids)[0][:, 0], input_signature=signature)
            hypotheses = {}
            for i in range(0, len(records), 100):
                batch = {k: t[i : i + 100] for k, t in model_inputs.items()}
                for record, caption in zip(records[i : i + 100], to_text(fn(batch)).numpy()):
                    hypotheses[record.image_id] = caption.decode()
            loop_ms = _p50_ms(lambda i: fn({k: t[i : i + 1] for k, t in model_inputs.items()}), args.latency_images)
            row = {
                "model": name, "decoder": decoder,
                **{k: round(v, 4) for k, v in corpus_bleu_scores(hypotheses, references).items()},
                "cider": round(corpus_cider(hypotheses, references), 4),
                **({} if args.no_coco else
                   {k: round(v, 4) for k, v in coco_caption_scores(hypotheses, references).items()}),
                "loop_ms": round(loop_ms, 1),
                "single_image_ms": round(loop_ms + sum(backbone_ms[i] for i in used), 1),
                "decoder_parameters": sum(int(v.shape.num_elements()) for _, c, i in members if i in used
                                          for v in c.trainable_variables),
            }
            rows.append(row)
            logging.info("%s", row)
    keys = ("model", "decoder", "bleu_1", "bleu_4", "cider",
            *(() if args.no_coco else ("coco_bleu_4", METEOR_METRIC, "coco_cider_d")),
            "loop_ms", "single_image_ms", "decoder_parameters")
    print(f"\n{args.split} split, {len(records)} images; backbone p50 per member: {[round(b, 1) for b in backbone_ms]} ms")
    print(" | ".join(keys))
    for row in rows:
        print(" | ".join(str(row[k]) for k in keys))
    print(json.dumps({"split": args.split, "images": len(records), "backbone_ms": backbone_ms, "rows": rows}))
    return 0


def _p50_ms(call, count: int) -> float:
    """The median wall time of `call(i)` for i in 0..count-1, after one warm-up call, in ms."""
    call(0)
    times = []
    for i in range(count):
        started = time.perf_counter()
        call(i)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def _member(text: str) -> tuple[str, str, str]:
    parts = text.split("=")
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"--member wants PROFILE=SAVEDMODEL=TRANSFORM_GRAPH, got {text!r}")
    return parts[0], parts[1], parts[2]


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--member", type=_member, action="append", required=True,
                        help="PROFILE=SAVEDMODEL=TRANSFORM_GRAPH of one trained model; give two or more")
    parser.add_argument("--data", default=os.environ.get("CAPTIONER_DATA_DIR", "../shared/flickr8k"))
    parser.add_argument("--split", default="dev")
    parser.add_argument("--limit", type=int, default=0)
    parser.add_argument("--latency-images", type=int, default=50)
    parser.add_argument("--no-coco", action="store_true", help="skip the coco-caption scorer (it needs Java)")
    args = parser.parse_args(argv)
    if len(args.member) < 2:
        parser.error("an ensemble needs at least two --member")
    return args


if __name__ == "__main__":
    sys.exit(main())

"""Caption quality and latency of exported models, greedy and beam, side by side in one run.

Run `python -m bench.quality --model merge=DIR --model attention=DIR [--data DIR] [--split dev]`
(DIR: a serving SavedModel, e.g. `serving/models/captioner/<version>` or a Trainer's
`Format-Serving`). For each model and each of its decoders (`greedy`, `beam_search` when
exported) it captions every image of the split through the exported signature (the graph
users get) and scores the captions with the pipeline's own BleuEvaluator code: corpus
BLEU-1..4 (NLTK) and CIDEr-D (models.metrics), then the coco-caption toolkit the papers
report (`coco_*`, METEOR; Java; `--no-coco` skips it).

Latency is one image per call, as a user of the web page or the CLI with one file sees it:
`--latency-images` images of the split, after one warm-up call, p50 and p90 in ms. The
models run one after another in this process, so they share the machine's load alike.
Training time is read from the Trainer's history.json when `--history NAME=FILE` is given.
The last line is JSON for the README.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

DECODERS = ("greedy", "beam_search")


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf

    from components.bleu_evaluator import evaluate
    from data.layout import scan_layout
    from models.coco_caption import COCO_METRICS

    records = scan_layout(Path(args.data), [args.split]).records[args.split]
    if args.limit:
        records = records[: args.limit]
    batches = [
        evaluate.Batch(
            image_ids=[r.image_id for r in records[i : i + args.batch_size]],
            images=[Path(r.path).read_bytes() for r in records[i : i + args.batch_size]],
            references=[list(r.captions) for r in records[i : i + args.batch_size]],
        )
        for i in range(0, len(records), args.batch_size)
    ]
    histories = dict(_pair(h) for h in args.history)
    rows = []
    for name, export_dir in (_pair(m) for m in args.model):
        loaded = tf.saved_model.load(export_dir)
        for decoder in DECODERS:
            if decoder not in loaded.signatures:
                logging.info("%s has no %s signature; skipped", name, decoder)
                continue
            captioner = evaluate.signature_captioner(loaded, decoder)
            result = evaluate.evaluate(
                iter(batches), captioner, len(records), name=f"{name}/{decoder}", coco_caption=not args.no_coco
            )
            latencies = _latency_ms(captioner, [b for batch in batches for b in batch.images][: args.latency_images])
            m = result.metrics
            row = {
                "model": name,
                "decoder": decoder,
                **{k: round(m[k], 4) for k in ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "cider")},
                **{k: None if m.get(k) is None else round(m[k], 4) for k in COCO_METRICS},
                "images": m["num_images"],
                "batch_images_per_s": round(m["images_per_second"], 1),
                "latency_p50_ms": round(float(np.percentile(latencies, 50)), 1),
                "latency_p90_ms": round(float(np.percentile(latencies, 90)), 1),
                "train_minutes": _train_minutes(histories.get(name)),
            }
            rows.append(row)
            logging.info("%s", row)
    _print_table(rows, args)
    print(json.dumps({"split": args.split, "data": str(args.data), "rows": rows}))
    return 0


def _latency_ms(captioner, images: list[bytes]) -> list[float]:
    captioner(images[:1])  # warm-up: the first call pays for graph set-up
    out = []
    for image in images:
        started = time.perf_counter()
        captioner([image])
        out.append((time.perf_counter() - started) * 1000)
    return out


def _train_minutes(history_file: str | None) -> float | None:
    if not history_file:
        return None
    history = json.loads(Path(history_file).read_text())
    seconds = history.get("epoch_seconds")
    return round(sum(seconds) / 60, 1) if seconds else None


def _pair(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name or not value:
        raise SystemExit(f"expected NAME=PATH, got {text!r}")
    return name, value


def _print_table(rows: list[dict], args: argparse.Namespace) -> None:
    print(f"\n{args.split} split of {args.data}: {rows[0]['images'] if rows else 0} images")
    from models.coco_caption import COCO_METRICS

    header = ("model", "decoder", "bleu_1", "bleu_4", "cider", *COCO_METRICS,
              "latency_p50_ms", "latency_p90_ms", "train_minutes")
    print(" | ".join(header))
    for row in rows:
        print(" | ".join("-" if row[k] is None else str(row[k]) for k in header))


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True, help="NAME=SAVEDMODEL_DIR (repeatable)")
    parser.add_argument("--history", action="append", default=[], help="NAME=history.json (training time)")
    parser.add_argument("--data", default=os.environ.get("CAPTIONER_DATA_DIR", "../shared/flickr8k"))
    parser.add_argument("--split", default="dev")
    parser.add_argument("--limit", type=int, default=0, help="only the first N images (0: all)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--latency-images", type=int, default=50)
    parser.add_argument("--no-coco", action="store_true", help="skip the coco-caption scorer (it needs Java)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())

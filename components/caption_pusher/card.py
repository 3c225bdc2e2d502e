"""The model card that travels with each pushed version: what the model is, in a few facts.

Written into the version's `assets.extra/captioner_push.json` (TF Serving ignores
`assets.extra/`), under "card": profile, dataset and its fingerprint, backbone, decoder,
decoding, the Trainer's facts (vocabulary size, epochs trained, the TFX pipeline run and the
MLflow run that trained it), the eval scores, the TFX model id and the time. The local server serves it at
`/model-card.json` and the web page shows its `summary`; a model trained on synthetic data
gets a `warning` saying that it only knows coloured shapes. A pure function, no TFX.
"""

from __future__ import annotations

import time
from typing import Any, Mapping

# How the card names the config's choices to a person.
_BACKBONES = {
    "efficientnet_lite0": "EfficientNet-Lite0",
    "efficientnet_lite1": "EfficientNet-Lite1",
    "efficientnet_lite2": "EfficientNet-Lite2",
    "densenet201": "DenseNet201",
}
_DECODERS = {"attention": "attention LSTM", "merge": "merge LSTM"}
_DATASETS = {"flickr8k": "Flickr8k", "synthetic": "synthetic coloured shapes"}
SYNTHETIC_WARNING = (
    "This model was trained on synthetic coloured shapes (the smoke/demo profile): it only knows "
    "coloured shapes on plain backgrounds, so real photos get shape captions. Train on Flickr8k "
    "(CAPTIONER_DATA_DIR=... make pipeline) for real captions."
)


def model_card(facts: Mapping[str, Any], scores: Mapping[str, float | None], model_id: int) -> dict[str, Any]:
    """The card of one pushed model: `facts` from the pipeline's config (profile, dataset,
    data_fingerprint, backbone, decoder, decode) and the Trainer (vocabulary_size,
    epochs_trained, pipeline_run_id, mlflow_run_id), `scores` from its blessing."""
    backbone = _BACKBONES.get(facts.get("backbone", ""), facts.get("backbone", "unknown backbone"))
    decoder = _DECODERS.get(facts.get("decoder", ""), facts.get("decoder", "unknown decoder"))
    dataset = _DATASETS.get(facts.get("dataset", ""), facts.get("dataset", "unknown data"))
    summary = f"{backbone} + {decoder}, trained on {dataset}"
    if scores.get("bleu_4") is not None:
        summary += f", BLEU-4 {scores['bleu_4']:.3f}"
        if scores.get("cider") is not None:
            summary += f", CIDEr-D {scores['cider']:.3f}"
        summary += " (dev split)"
    card = {
        **facts,
        "summary": summary,
        "scores": {k: v for k, v in scores.items() if v is not None},
        "model_id": model_id,
        "pushed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if facts.get("dataset") == "synthetic":
        card["warning"] = SYNTHETIC_WARNING
    return card

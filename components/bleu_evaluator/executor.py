"""TFX glue for BleuEvaluator: scores model (and baseline), applies the gate, writes artifacts.

The blessing is marked exactly as TFX's Evaluator marks it (an empty BLESSED or NOT_BLESSED
file; custom properties `blessed`, `current_model`, `current_model_id`, `baseline_model`,
`baseline_model_id`), because that is what `LatestBlessedModelStrategy` reads to find the
baseline of the next run. It adds `reason`, the gate's sentence.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from typing import Any

from tfx import types
from tfx.components.evaluator import constants as tfx_evaluator
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.utils import path_utils

from components import tracked
from components.bleu_evaluator import evaluate, gate
from components.tracked import from_parameter, records_failures
from models.coco_caption import COCO_METRICS
from models.contract import BLEU_METRICS, CIDER_METRIC, EXAMPLE_IMAGE_FILE, METRICS_FILE, PREDICTIONS_FILE
from tracking.artifacts import images_by_id
from tracking.lifecycle import gate_tags
from tracking.report import small_jpeg

log = logging.getLogger(__name__)

DEFAULT_SIGNATURE = "serving_default"
EXAMPLE_MAX_PX = 96  # the input example's size: it only has to show what the model takes


class Executor(base_executor.BaseExecutor):
    @records_failures(from_parameter)
    def Do(
        self,
        input_dict: dict[str, list[types.Artifact]],
        output_dict: dict[str, list[types.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        examples = artifact_utils.get_single_instance(input_dict["examples"])
        model = artifact_utils.get_single_instance(input_dict["model"])
        baselines = input_dict.get("baseline_model") or []
        baseline = baselines[0] if baselines else None
        evaluation_artifact = artifact_utils.get_single_instance(output_dict["evaluation"])
        blessing = artifact_utils.get_single_instance(output_dict["blessing"])

        split = exec_properties["eval_split"]
        signature = exec_properties["signature"]
        batch_size = int(exec_properties["batch_size"])
        thresholds = gate.Thresholds(
            min_bleu_4=float(exec_properties["min_bleu_4"]),
            min_bleu_1=float(exec_properties["min_bleu_1"]),
            max_bleu_4_drop=float(exec_properties["max_bleu_4_drop"]),
            min_cider=float(exec_properties.get("min_cider") or 0.0),
        )
        # Only the candidate's figures are reported; the gate compares the project's scores.
        coco_caption = bool(exec_properties.get("coco_caption"))
        splits = artifact_utils.decode_split_names(examples.split_names)
        if split not in splits:
            raise ValueError(f"{examples.uri} has no split {split!r}; it has {', '.join(splits)}")
        files = evaluate.split_files(artifact_utils.get_split_uri([examples], split))
        total = evaluate.count_examples(files)
        log.info("BleuEvaluator: %d images in split %r, signature %r", total, split, signature)

        result = _score(model, files, total, signature, batch_size, "candidate model", coco_caption=coco_caption)
        baseline_metrics = None
        if baseline is not None and baseline.id == model.id:
            log.info("the blessed baseline is this very model (id %d): its scores are reused", model.id)
            baseline_metrics = result.metrics
        elif baseline is not None:
            log.info("scoring the latest blessed model (id %d) on the same split", baseline.id)
            baseline_metrics = _score(
                baseline, files, total, signature, batch_size, "blessed baseline", is_baseline=True
            ).metrics
        else:
            log.info("no blessed model yet: only the absolute thresholds apply")

        decision = gate.decide(
            result.scores, thresholds, None if baseline_metrics is None else _gated(baseline_metrics)
        )
        (log.info if decision.blessed else log.warning)("gate: %s", decision.reason)

        metrics = {
            **result.metrics,
            "signature": signature,
            "eval_split": split,
            "model_uri": model.uri,
            "baseline": None
            if baseline is None
            else {"model_id": baseline.id, "model_uri": baseline.uri, **_gated(baseline_metrics)},
            "thresholds": dataclasses.asdict(thresholds),
            "blessed": decision.blessed,
            "reason": decision.reason,
        }
        gallery_size = int(exec_properties.get("gallery_size") or 0)
        pictures = _gallery_images(files, result.predictions, gallery_size)
        _write_evaluation(evaluation_artifact, metrics, result.predictions, pictures)
        _mark_blessing(blessing, model, baseline, decision)
        # The candidate's scores travel with the blessing: the pusher puts them on the model card.
        for name in (*BLEU_METRICS, CIDER_METRIC, *COCO_METRICS):
            if metrics.get(name) is not None:
                blessing.set_float_custom_property(name, float(metrics[name]))
        settings = tracked.settings_of(from_parameter(exec_properties), self._context)
        if settings is not None:
            _log_to_mlflow(settings, metrics, result.predictions, pictures, gallery_size, evaluation_artifact.uri)


def _gallery_images(files: list[str], predictions: list[dict], size: int) -> dict[str, bytes]:
    """The encoded images of the gallery's picks (at least one: the model's input example)."""
    from tracking.report import pick_gallery

    wanted = {str(p["image_id"]) for p in pick_gallery(predictions, max(size, 1))}
    return images_by_id(evaluate.read_batches(files, 64), wanted)


def _log_to_mlflow(settings, metrics: dict[str, Any], predictions: list[dict], pictures: dict[str, bytes], size: int,
                   source_uri: str) -> None:
    """Scores, the gate's decision and the gallery into the pipeline run's MLflow run; a
    tracking error is a warning (the evaluation itself is done and recorded in ML Metadata)."""
    from tracking import artifacts as run_artifacts
    from tracking import metrics as run_metrics

    try:
        client, run_id = tracked.open_run(settings)
        run_metrics.log_values(client, run_id, run_metrics.evaluation_values(metrics))
        for key, value in gate_tags(metrics["blessed"], str(metrics["reason"])).items():
            client.set_tag(run_id, key, value)
        run_artifacts.log_evaluation(client, run_id, metrics, predictions, pictures, size,
                                     f"{settings.pipeline_name} {settings.pipeline_run_id}")
        run_artifacts.mark_logged(client, run_id, run_artifacts.EVALUATION_DIR, source_uri)
        log.info("MLflow: scores, gate decision and gallery logged into run %s", run_id)
    except Exception as e:  # noqa: BLE001
        log.warning("MLflow: the evaluation was not logged (%s: %s)", type(e).__name__, e)


def _score(
    model: types.Artifact,
    files: list[str],
    total: int,
    signature: str,
    batch_size: int,
    name: str,
    is_baseline: bool = False,
    coco_caption: bool = False,
) -> evaluate.Evaluation:
    export_dir = path_utils.serving_model_path(model.uri)
    started = time.monotonic()
    try:
        captioner = evaluate.signature_captioner(export_dir, signature)
    except KeyError:
        if not is_baseline or signature == DEFAULT_SIGNATURE:
            raise
        # An older baseline may predate this signature: what it served by default is what counts.
        log.warning("%s: %s has no signature %r; using %r", name, export_dir, signature, DEFAULT_SIGNATURE)
        captioner = evaluate.signature_captioner(export_dir, DEFAULT_SIGNATURE)
    log.info("%s: loaded %s in %.1f s", name, export_dir, time.monotonic() - started)
    result = evaluate.evaluate(
        evaluate.read_batches(files, batch_size), captioner, total, name=name, coco_caption=coco_caption
    )
    m = result.metrics
    log.info(
        "%s: BLEU-1 %.4f, BLEU-2 %.4f, BLEU-3 %.4f, BLEU-4 %.4f, CIDEr-D %.4f, METEOR %s; %d images in %.1f s (%.1f images/s)",
        name, m["bleu_1"], m["bleu_2"], m["bleu_3"], m["bleu_4"], m["cider"],
        "skipped" if m["meteor"] is None else f"{m['meteor']:.4f}",
        m["num_images"], m["seconds"], m["images_per_second"],
    )
    if coco_caption:
        log.info(
            "%s, coco-caption: BLEU-1 %.4f, BLEU-4 %.4f, METEOR %.4f, ROUGE-L %.4f, CIDEr-D %.4f",
            name, m["coco_bleu_1"], m["coco_bleu_4"], m["meteor"], m["coco_rouge_l"], m["coco_cider_d"],
        )
    return result


def _gated(metrics: dict[str, Any]) -> dict[str, float]:
    """The scores the gate compares: BLEU-1..4 and CIDEr-D of the project's scorer."""
    return {k: metrics[k] for k in (*BLEU_METRICS, CIDER_METRIC)}


def _write_evaluation(artifact: types.Artifact, metrics: dict[str, Any], predictions: list[dict],
                      pictures: dict[str, bytes]) -> None:
    os.makedirs(artifact.uri, exist_ok=True)
    if pictures:
        with open(os.path.join(artifact.uri, EXAMPLE_IMAGE_FILE), "wb") as f:
            f.write(small_jpeg(pictures[min(pictures)], EXAMPLE_MAX_PX))
    with open(os.path.join(artifact.uri, METRICS_FILE), "w") as f:
        json.dump(metrics, f, indent=2)
    with open(os.path.join(artifact.uri, PREDICTIONS_FILE), "w") as f:
        for prediction in predictions:
            f.write(json.dumps(prediction) + "\n")
    for name in (*BLEU_METRICS, CIDER_METRIC, "images_per_second"):
        artifact.set_float_custom_property(name, float(metrics[name]))
    for name in COCO_METRICS:
        if metrics.get(name) is not None:
            artifact.set_float_custom_property(name, float(metrics[name]))
    artifact.set_int_custom_property("num_images", int(metrics["num_images"]))
    artifact.set_string_custom_property("signature", metrics["signature"])


def _mark_blessing(
    blessing: types.Artifact, model: types.Artifact, baseline: types.Artifact | None, decision: gate.Decision
) -> None:
    c = tfx_evaluator  # the very keys and file names LatestBlessedModelStrategy and Pusher read
    os.makedirs(blessing.uri, exist_ok=True)
    blessing.set_string_custom_property(c.ARTIFACT_PROPERTY_CURRENT_MODEL_URI_KEY, model.uri)
    blessing.set_int_custom_property(c.ARTIFACT_PROPERTY_CURRENT_MODEL_ID_KEY, model.id)
    if baseline is not None:
        blessing.set_string_custom_property(c.ARTIFACT_PROPERTY_BASELINE_MODEL_URI_KEY, baseline.uri)
        blessing.set_int_custom_property(c.ARTIFACT_PROPERTY_BASELINE_MODEL_ID_KEY, baseline.id)
    marker = c.BLESSED_FILE_NAME if decision.blessed else c.NOT_BLESSED_FILE_NAME
    open(os.path.join(blessing.uri, marker), "w").close()
    blessing.set_int_custom_property(
        c.ARTIFACT_PROPERTY_BLESSED_KEY, c.BLESSED_VALUE if decision.blessed else c.NOT_BLESSED_VALUE
    )
    blessing.set_string_custom_property("reason", decision.reason)

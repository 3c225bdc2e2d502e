"""The few lines a finished pipeline run ends with: scores, the gate, the push, what next.

Called by pipelines/local_runner.py after a run; reads only the RunRecord (ML Metadata), so
the same summary can be printed for any recorded run.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from tracking.run_record import RunRecord

# Evaluation property -> how the summary names it, in this order (the full set, both scorers,
# is in the evaluation report and MLflow).
SUMMARY_SCORES = {"bleu_1": "BLEU-1", "bleu_4": "BLEU-4", "cider": "CIDEr-D", "meteor": "METEOR", "coco_rouge_l": "ROUGE-L"}
DEFAULT_SERVING_BASE = Path("serving/models/captioner")  # what `make serve-local` serves


def summary_lines(record: RunRecord, push_base: Path, mlflow_ui: str, repo_root: Path) -> list[str]:
    """Scores, gate decision and reason, pushed version (or why not) and the next commands."""
    lines: list[str] = []
    evaluation = record.evaluation
    if evaluation is not None:
        props = evaluation.properties
        scores = ", ".join(f"{label} {props[key]:.4f}" for key, label in SUMMARY_SCORES.items() if props.get(key) is not None)
        lines.append(f"scores on {props.get('num_images', '?')} images: {scores}")
    if record.blessing is not None:
        reason = record.blessing.properties.get("reason") or "no reason recorded"
        verdict = "blessed" if record.blessed else "not blessed"
        lines.append(f"gate: {reason}" if reason.startswith(verdict) else f"gate: {verdict} ({reason})")
    if record.pushed_model is not None:
        props = record.pushed_model.properties
        if record.pushed:
            lines.append(f"pushed: version {props.get('pushed_version')} under {push_base}")
        else:
            lines.append(f"not pushed: {props.get('reason', 'no reason recorded')}")
    if record.cached_nodes:
        lines.append(f"reused from the TFX cache: {', '.join(record.cached_nodes)}")
    lines.append("next:")
    if _same_path(push_base, repo_root / DEFAULT_SERVING_BASE):
        serve = "make serve-local"
    else:
        serve = shlex.join([".venv/bin/python", "-m", "serving.local_server", "--model-base", str(push_base)])
    lines.append(f"  {serve:<40} # TF Serving's REST API and the web page on http://127.0.0.1:8501/")
    lines.append(f"  {'.venv/bin/caption photo.jpg':<40} # a caption from the command line, once serving")
    lines.append(f"  {mlflow_ui:<40} # this run in the MLflow UI")
    return lines


def _same_path(a: Path, b: Path) -> bool:
    return Path(a).resolve() == Path(b).resolve()

"""Files for people, logged as MLflow artifacts: learning curve, caption gallery, data summaries.

Called by tracking/artifacts.py and the unit tests. Pure functions: plain inputs (a
history dict, prediction dicts, statistics and anomalies protos) in, files or text out; no
MLflow, TFX or ML Metadata here.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

# The learning curve's panels: (y label, ((history key, legend), ...)); a panel is drawn
# when the history has any of its keys (BLEU only with train.select_by a BLEU score).
CURVES = (
    ("loss", (("loss", "train"), ("val_loss", "eval"))),
    ("accuracy", (("accuracy", "train"), ("val_accuracy", "eval"))),
    ("greedy eval BLEU", (("val_bleu_1", "BLEU-1"), ("val_bleu_4", "BLEU-4"))),
    ("CIDEr-D (self-critical stage)", (("scst_reward", "train samples' reward"), ("val_cider_d", "greedy eval"))),
)

STAT_COLUMNS = (
    "split", "feature", "type", "count", "missing", "min", "max", "mean", "std_dev",
    "of", "unique", "min_values", "avg_values", "max_values",
)


# --- learning curve ---------------------------------------------------------------------

def learning_curve_png(history: Mapping[str, Sequence[float]], path: Path, title: str = "") -> Path:
    """Train and eval loss (and accuracy and greedy eval BLEU, when recorded) per epoch, as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = [(label, lines) for label, lines in CURVES if any(history.get(key) for key, _ in lines)]
    if not panels:
        known = [key for _, lines in CURVES for key, _ in lines]
        raise ValueError(f"history has none of {known}: {sorted(history)}")
    fig = Figure(figsize=(5.5 * len(panels), 4), dpi=100)
    FigureCanvasAgg(fig)  # the Agg canvas, without touching pyplot's global backend
    for i, (y_label, lines) in enumerate(panels, start=1):
        ax = fig.add_subplot(1, len(panels), i)
        for key, label in lines:
            # None: an epoch without this value (e.g. SCST's before its stage began).
            values = [math.nan if v is None else v for v in history.get(key) or []]
            if values:
                ax.plot(range(1, len(values) + 1), values, marker="o", markersize=3, label=f"{label} ({key})")
        ax.set_xlabel("epoch")
        ax.set_ylabel(y_label)
        ax.grid(True, alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


# --- caption gallery --------------------------------------------------------------------

def read_predictions(path: Path) -> list[dict[str, Any]]:
    """The evaluator's predictions.jsonl: one {image_id, caption, references} a line."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def pick_gallery(predictions: Sequence[Mapping[str, Any]], size: int) -> list[Mapping[str, Any]]:
    """`size` predictions spread evenly over the split sorted by image_id (deterministic)."""
    ordered = sorted(predictions, key=lambda p: str(p["image_id"]))
    if size <= 0:
        return []
    if len(ordered) <= size:
        return ordered
    return [ordered[i * len(ordered) // size] for i in range(size)]


def small_jpeg(image: Path | bytes, max_px: int = 224) -> bytes:
    """The image (a file or its bytes) as a JPEG shrunk to fit `max_px`; raises
    OSError or ValueError when it is not a readable image."""
    from PIL import Image

    with Image.open(io.BytesIO(image) if isinstance(image, bytes) else image) as picture:
        picture = picture.convert("RGB")
        picture.thumbnail((max_px, max_px))
        buffer = io.BytesIO()
        picture.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def thumbnail_data_uri(image: Path | bytes, max_px: int = 224) -> str | None:
    """A base64 JPEG `data:` URI of the image (a file or its bytes) shrunk to fit `max_px`,
    or None if unreadable."""
    try:
        jpeg = small_jpeg(image, max_px)
    except (OSError, ValueError):
        return None
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


GALLERY_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #222; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(260px, 1fr)); gap: 1rem; }
figure { margin: 0; border: 1px solid #ddd; border-radius: 6px; padding: .6rem; }
figure img { display: block; max-width: 100%; margin: 0 auto .5rem; }
.generated { font-weight: 600; margin: .2rem 0; }
.id { color: #777; font-size: .8rem; }
ol { margin: .2rem 0 0 1.1rem; padding: 0; font-size: .85rem; color: #444; }
.missing { color: #a00; font-size: .85rem; }
"""


def gallery_html(
    predictions: Sequence[Mapping[str, Any]],
    images: Path | Mapping[str, bytes],
    path: Path,
    size: int = 20,
    title: str = "Generated captions",
    subtitle: str = "",
    thumbnail_px: int = 224,
) -> Path:
    """A self-contained HTML page: each picked image (embedded) with its generated caption
    and its reference captions. `images`: a directory of `<image_id>.jpg`, or the encoded
    images by id (as the evaluator read them from the Examples)."""
    cards = []
    for p in pick_gallery(predictions, size):
        image_id = str(p["image_id"])
        if isinstance(images, Mapping):
            source, where = images.get(image_id), "the evaluated examples"
        else:
            source, where = Path(images) / f"{image_id}.jpg", str(images)
        uri = thumbnail_data_uri(source, thumbnail_px) if source is not None else None
        image = (
            f'<img src="{uri}" alt="{html.escape(image_id)}">'
            if uri
            else f'<p class="missing">image {html.escape(image_id)}.jpg not found in {html.escape(where)}</p>'
        )
        refs = "".join(f"<li>{html.escape(str(r))}</li>" for r in p.get("references") or [])
        cards.append(
            "<figure>"
            f"{image}"
            f'<figcaption><p class="generated">{html.escape(str(p.get("caption", "")))}</p>'
            f'<p class="id">{html.escape(image_id)} · references:</p><ol>{refs}</ol></figcaption>'
            "</figure>"
        )
    page = (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{GALLERY_STYLE}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>"
        + (f"<p>{html.escape(subtitle)}</p>" if subtitle else "")
        + f'<div class="grid">{"".join(cards)}</div></body></html>\n'
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path


# --- data statistics --------------------------------------------------------------------

def _number(value: float) -> float | str:
    """Statistics rounded for reading; NaN and infinities become empty cells."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return round(float(value), 4)


def statistics_rows(stats_by_split: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per split and feature from TFDV `DatasetFeatureStatisticsList` protos.

    `min/max/mean/std_dev` describe what the `of` column says: the values of a numeric
    feature, the byte length of a bytes feature, or the character length of a string
    feature (only its mean is recorded by TFDV; TFDV counts image bytes as a string). `*_values` are values per example.
    """
    from tensorflow_metadata.proto.v0 import statistics_pb2

    type_names = statistics_pb2.FeatureNameStatistics.Type.Name
    rows = []
    for split, stats_list in stats_by_split.items():
        for dataset in stats_list.datasets:
            for feature in dataset.features:
                name = ".".join(feature.path.step) if feature.HasField("path") else feature.name
                row: dict[str, Any] = {c: "" for c in STAT_COLUMNS}
                row.update(split=split, feature=name, type=type_names(feature.type))
                kind = feature.WhichOneof("stats")
                stats = getattr(feature, kind) if kind else None
                if kind == "num_stats":
                    row.update(of="value", min=_number(stats.min), max=_number(stats.max),
                               mean=_number(stats.mean), std_dev=_number(stats.std_dev))
                elif kind == "bytes_stats":
                    row.update(of="bytes", unique=stats.unique, min=_number(stats.min_num_bytes),
                               max=_number(stats.max_num_bytes), mean=_number(stats.avg_num_bytes))
                elif kind == "string_stats":
                    row.update(of="length", unique=stats.unique, mean=_number(stats.avg_length))
                common = stats.common_stats if stats is not None and stats.HasField("common_stats") else None
                if common is not None:
                    row.update(
                        count=common.num_non_missing, missing=common.num_missing,
                        min_values=common.min_num_values, max_values=common.max_num_values,
                        avg_values=_number(common.avg_num_values),
                    )
                rows.append(row)
    return rows


def statistics_csv(rows: Iterable[Mapping[str, Any]], path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=STAT_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return path


def statistics_markdown(rows: Sequence[Mapping[str, Any]], title: str = "Data statistics") -> str:
    """A markdown table per split (readable in MLflow's artifact viewer)."""
    columns = [c for c in STAT_COLUMNS if c != "split"]
    lines = [f"# {title}", ""]
    for split in dict.fromkeys(r["split"] for r in rows):
        lines += [f"## {split}", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        for r in (r for r in rows if r["split"] == split):
            lines.append("| " + " | ".join(str(r[c]) for c in columns) + " |")
        lines.append("")
    if len(lines) == 2:
        lines.append("No statistics.")
    return "\n".join(lines) + "\n"


# --- anomalies --------------------------------------------------------------------------

def anomalies_summary(anomalies_by_split: Mapping[str, Any]) -> dict[str, list[dict[str, str]]]:
    """`{split: [{feature, severity, short_description, description}, ...]}` from Anomalies protos."""
    from tensorflow_metadata.proto.v0 import anomalies_pb2

    severity = anomalies_pb2.AnomalyInfo.Severity.Name
    summary: dict[str, list[dict[str, str]]] = {}
    for split, anomalies in sorted(anomalies_by_split.items()):
        entries = []
        for feature, info in sorted(anomalies.anomaly_info.items()):
            entries.append({
                "feature": feature,
                "severity": severity(info.severity),
                "short_description": info.short_description,
                "description": info.description or "; ".join(r.description for r in info.reason),
            })
        if anomalies.HasField("dataset_anomaly_info"):
            info = anomalies.dataset_anomaly_info
            entries.append({
                "feature": "(dataset)",
                "severity": severity(info.severity),
                "short_description": info.short_description,
                "description": info.description,
            })
        summary[split] = entries
    return summary


def anomalies_text(summary: Mapping[str, Sequence[Mapping[str, str]]]) -> str:
    """One line per anomaly, or a line saying each split has none."""
    lines = []
    for split, entries in summary.items():
        if not entries:
            lines.append(f"{split}: no anomalies against the schema")
        for e in entries:
            lines.append(f"{split}: {e['feature']}: {e['short_description']} ({e['description']})")
    return "\n".join(lines or ["no anomalies report"]) + "\n"

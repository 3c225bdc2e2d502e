"""Files a run leaves for people, logged as MLflow artifacts under stable folders:

- `config/config.json`: the whole config of the run (tracking/lineage.py links to it);
- `data/`: the ingestion report, the schema, the anomalies (JSON and text) and a
  statistics summary (CSV and Markdown), from the validation steps' outputs;
- `training/`: the history (JSON) and the learning curve (PNG);
- `evaluation/`: metrics.json, predictions.jsonl and gallery.html (thumbnails of the
  evaluated images with their generated and reference captions).

Each function writes into a temporary folder and logs it with the client API, so it needs
no active run. TFDV and TensorFlow load only in the functions that read their files.

A folder is logged once per TFX artifact it comes from: the run that logs it is tagged
`<folder>_source` = that artifact's URI, and a later run whose step was reused from TFX's
cache gets `<folder>_logged_in` = the earlier run instead of a second copy.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from models.contract import HISTORY_FILE, INGESTION_REPORT_FILE, METRICS_FILE, PREDICTIONS_FILE, SCHEMA_FILE
from tracking import report
from tracking.lifecycle import quoted

CONFIG_DIR, DATA_DIR, TRAINING_DIR, EVALUATION_DIR = "config", "data", "training", "evaluation"


class _Folder:
    """A temporary folder whose files are logged as one artifact folder of a run."""

    def __init__(self, client, run_id: str, artifact_path: str):
        self.client, self.run_id, self.artifact_path = client, run_id, artifact_path

    def __enter__(self) -> Path:
        self._tmp = tempfile.TemporaryDirectory(prefix="mlflow-artifacts-")
        return Path(self._tmp.name)

    def __exit__(self, kind, value, traceback) -> None:
        try:
            if kind is None and any(Path(self._tmp.name).iterdir()):
                self.client.log_artifacts(self.run_id, self._tmp.name, self.artifact_path)
        finally:
            self._tmp.cleanup()


def logged_before(client, run_id: str, folder: str, source_uri: str) -> bool:
    """Whether `folder` from the TFX artifact at `source_uri` is in this run or an earlier
    one (then this run is tagged with that run's id). True means: do not log it again."""
    tag = f"{folder}_source"
    run = client.get_run(run_id)
    if run.data.tags.get(tag) == source_uri:
        return True
    earlier = client.search_runs([run.info.experiment_id], filter_string=f"tags.{tag} = {quoted(source_uri)}",
                                 order_by=["attributes.start_time ASC"], max_results=1)
    if earlier:
        client.set_tag(run_id, f"{folder}_logged_in", earlier[0].info.run_id)
        return True
    return False


def mark_logged(client, run_id: str, folder: str, source_uri: str) -> None:
    client.set_tag(run_id, f"{folder}_source", source_uri)


def log_config(client, run_id: str, config: Mapping[str, Any]) -> None:
    with _Folder(client, run_id, CONFIG_DIR) as folder:
        (folder / "config.json").write_text(json.dumps(config, indent=2))


def log_training(client, run_id: str, history: Mapping[str, Sequence[float]], title: str) -> None:
    with _Folder(client, run_id, TRAINING_DIR) as folder:
        (folder / HISTORY_FILE).write_text(json.dumps(history, indent=2))
        report.learning_curve_png(history, folder / "learning_curve.png", title)


def log_evaluation(
    client,
    run_id: str,
    metrics: Mapping[str, Any],
    predictions: Sequence[Mapping[str, Any]],
    images: Path | Mapping[str, bytes],
    gallery_size: int,
    title: str,
) -> None:
    """metrics.json, predictions.jsonl and the gallery (`images`: see report.gallery_html)."""
    with _Folder(client, run_id, EVALUATION_DIR) as folder:
        (folder / METRICS_FILE).write_text(json.dumps(metrics, indent=2))
        (folder / PREDICTIONS_FILE).write_text("".join(json.dumps(p) + "\n" for p in predictions))
        scores = ", ".join(
            f"{k.upper().replace('_', '-')} {metrics[k]:.3f}" for k in ("bleu_1", "bleu_4", "meteor")
            if isinstance(metrics.get(k), (int, float))
        )
        report.gallery_html(
            predictions, images, folder / "gallery.html", size=gallery_size,
            title=f"{title}: generated captions",
            subtitle=f"Split {metrics.get('eval_split', '?')} ({len(predictions)} images; {scores}). "
            "Bold: generated caption; list: references.",
        )


def log_data(
    client,
    run_id: str,
    title: str,
    ingestion_report: Path | None = None,
    schema: Path | None = None,
    anomalies: tuple[Path, Sequence[str]] | None = None,
    statistics: tuple[Path, Sequence[str]] | None = None,
) -> None:
    """The data steps' outputs: each given folder's file, anomalies and statistics as
    `(artifact folder, split names)` summarised for reading in the UI."""
    with _Folder(client, run_id, DATA_DIR) as folder:
        if ingestion_report is not None:
            (folder / INGESTION_REPORT_FILE).write_bytes((ingestion_report / INGESTION_REPORT_FILE).read_bytes())
        if schema is not None:
            (folder / SCHEMA_FILE).write_bytes((schema / SCHEMA_FILE).read_bytes())
        if anomalies is not None:
            from data.anomalies import read_anomalies

            summary = report.anomalies_summary(read_anomalies(*anomalies))
            (folder / "anomalies.json").write_text(json.dumps(summary, indent=2))
            (folder / "anomalies.txt").write_text(report.anomalies_text(summary))
        if statistics is not None:
            rows = report.statistics_rows(_statistics(*statistics))
            report.statistics_csv(rows, folder / "statistics.csv")
            (folder / "statistics.md").write_text(report.statistics_markdown(rows, f"Statistics of {title}"))


def _statistics(uri: Path, splits: Sequence[str]) -> dict[str, Any]:
    import tensorflow_data_validation as tfdv

    from models.contract import STATISTICS_FILE

    return {split: tfdv.load_stats_binary(str(Path(uri) / f"Split-{split}" / STATISTICS_FILE)) for split in splits}


def images_by_id(batches: Iterator[Any], wanted: set[str]) -> dict[str, bytes]:
    """The encoded images of `wanted` ids from evaluator batches (image_ids, images)."""
    found: dict[str, bytes] = {}
    for batch in batches:
        for image_id, image in zip(batch.image_ids, batch.images):
            if image_id in wanted:
                found[image_id] = bytes(image)
        if len(found) == len(wanted):
            break
    return found

"""Reads an ExampleAnomalies artifact and words each anomaly for a person.

Called by the AnomaliesCheck component (component.py) and by tests; data/anomalies.py
reads the artifact. ExampleValidator only records anomalies; this turns them into a failed
run whose message names each one.
"""

from __future__ import annotations

from pathlib import Path

from tensorflow_metadata.proto.v0 import anomalies_pb2

from data.anomalies import read_anomalies


class AnomaliesFound(RuntimeError):
    """The data does not match the curated schema; the message lists every anomaly."""


def describe(anomalies_by_split: dict[str, anomalies_pb2.Anomalies]) -> list[str]:
    """One line per anomaly: `split: feature: short description (detail)`."""
    lines = []
    for split, anomalies in sorted(anomalies_by_split.items()):
        for feature, info in sorted(anomalies.anomaly_info.items()):
            detail = info.description or "; ".join(r.description for r in info.reason)
            lines.append(f"{split}: {feature}: {info.short_description} ({detail})")
        if anomalies.HasField("dataset_anomaly_info"):
            info = anomalies.dataset_anomaly_info
            lines.append(f"{split}: dataset: {info.short_description} ({info.description})")
    return lines


def raise_on_anomalies(anomalies_uri: str | Path, splits: list[str]) -> None:
    lines = describe(read_anomalies(anomalies_uri, splits))
    if lines:
        raise AnomaliesFound(
            f"data validation found {len(lines)} anomalies against the curated schema "
            "(data/schema/schema.pbtxt); the pipeline stops here:\n  " + "\n  ".join(lines)
        )

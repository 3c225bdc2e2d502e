"""Reads the ExampleAnomalies artifact that TFX's ExampleValidator writes.

Called by the AnomaliesCheck component (which fails the run on any anomaly) and by the
MLflow recording (which files a summary), so both read the artifact one way.
"""

from __future__ import annotations

from pathlib import Path

from tensorflow_metadata.proto.v0 import anomalies_pb2

# ExampleValidator's file name, under Split-<name>/ (TFX's own name).
ANOMALIES_FILE = "SchemaDiff.pb"


def read_anomalies(anomalies_uri: str | Path, splits: list[str]) -> dict[str, anomalies_pb2.Anomalies]:
    """The Anomalies proto of each split (`<uri>/Split-<name>/SchemaDiff.pb`)."""
    result = {}
    for split in splits:
        path = Path(anomalies_uri) / f"Split-{split}" / ANOMALIES_FILE
        result[split] = anomalies_pb2.Anomalies.FromString(path.read_bytes())
    return result

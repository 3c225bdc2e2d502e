"""Read-only helpers for tests that inspect what a pipeline run recorded in ML Metadata."""

from __future__ import annotations

from pathlib import Path

from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2


def open_store(metadata_path: Path) -> metadata_store.MetadataStore:
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = str(metadata_path)
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    return metadata_store.MetadataStore(config)


def live_artifacts(
    metadata_path: Path, type_name: str, producer: str | None = None
) -> list[metadata_store_pb2.Artifact]:
    """Published (LIVE) artifacts of a type, oldest first; `producer` is a component id."""
    store = open_store(metadata_path)
    try:
        artifacts = store.get_artifacts_by_type(type_name)
    except Exception:  # the type was never registered: nothing of it was produced
        return []
    live = [a for a in artifacts if a.state == metadata_store_pb2.Artifact.LIVE]
    if producer:  # TFX lays out artifacts as <pipeline root>/<component id>/<output>/<id>
        live = [a for a in live if Path(a.uri).parts[-3] == producer]
    return sorted(live, key=lambda a: a.id)


def latest_uri(metadata_path: Path, type_name: str, producer: str | None = None) -> Path:
    artifacts = live_artifacts(metadata_path, type_name, producer)
    assert artifacts, f"no published {type_name} artifact from {producer or 'any component'} in {metadata_path}"
    return Path(artifacts[-1].uri)


def executions(metadata_path: Path, component: str) -> list[metadata_store_pb2.Execution]:
    """Executions of a component (by class name, e.g. "FeatureExtractor"), oldest first."""
    store = open_store(metadata_path)
    types = {t.id: t.name for t in store.get_execution_types()}
    found = [e for e in store.get_executions() if types[e.type_id].split(".")[-1] == component]
    return sorted(found, key=lambda e: e.id)

"""What one pipeline run produced, read from ML Metadata: artifact paths and properties.

Called by the local runner's closing summary (tracking/run_summary.py), the lineage
command and the end-to-end tests. LocalDagRunner registers a context of type `pipeline_run`, named with the run id,
and attaches every execution of that run to it. An execution that TFX served from its
cache (state CACHED) is attached too, with OUTPUT events on the artifacts it reused: a rerun
where everything is cached is still a run, whose BLEU and push status are those reused
artifacts. Reading only; returns a plain dataclass, nothing here knows about MLflow.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

from models.contract import PUSH_RECORD_FILE

log = logging.getLogger(__name__)

PIPELINE_CONTEXT = "pipeline"
PIPELINE_RUN_CONTEXT = "pipeline_run"
NODE_CONTEXT = "node"

# RunRecord field -> (artifact type name, output key). The key tells apart artifacts of one
# type from different outputs: Transform also outputs ExampleStatistics, Schema and
# ExampleAnomalies (pre/post-transform), FeatureExtractor a Schema of its features.
# Resolver nodes are skipped: their "outputs" are older artifacts they picked.
ARTIFACTS = {
    "ingestion_report": ("captioner.IngestionReport", "report"),
    "statistics": ("ExampleStatistics", "statistics"),
    "schema": ("Schema", "schema"),
    "anomalies": ("ExampleAnomalies", "anomalies"),
    "transform_graph": ("TransformGraph", "transform_graph"),
    "model": ("Model", "model"),
    "model_run": ("ModelRun", "model_run"),
    "evaluation": ("captioner.CaptionEvaluation", "evaluation"),
    "blessing": ("ModelBlessing", "blessing"),
    "pushed_model": ("PushedModel", "pushed_model"),
}
FIELD_BY_OUTPUT = {output: field for field, output in ARTIFACTS.items()}
# The project's own types were named without the `captioner.` namespace (which Kubeflow
# Pipelines v2 requires) before; metadata stores written then still hold those names.
FIELD_BY_OUTPUT.update({("IngestionReport", "report"): "ingestion_report",
                        ("CaptionEvaluation", "evaluation"): "evaluation"})


@dataclasses.dataclass(frozen=True)
class ArtifactInfo:
    """One published artifact: where it is and its (custom) properties as plain values."""

    id: int
    type_name: str
    uri: Path
    producer: str  # node id, e.g. "Trainer"
    properties: dict[str, Any]

    @property
    def split_names(self) -> list[str]:
        raw = self.properties.get("split_names")
        return json.loads(raw) if raw else []


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """A pipeline run as ML Metadata recorded it; `None` where the run produced nothing."""

    pipeline_name: str
    run_id: str | None = None
    # node id -> final execution state ("COMPLETE", "CACHED", "FAILED", ...).
    executions: dict[str, str] = dataclasses.field(default_factory=dict)
    ingestion_report: ArtifactInfo | None = None
    statistics: ArtifactInfo | None = None
    schema: ArtifactInfo | None = None
    anomalies: ArtifactInfo | None = None
    transform_graph: ArtifactInfo | None = None
    model: ArtifactInfo | None = None
    model_run: ArtifactInfo | None = None
    evaluation: ArtifactInfo | None = None
    blessing: ArtifactInfo | None = None
    pushed_model: ArtifactInfo | None = None

    @property
    def cached_nodes(self) -> list[str]:
        return [node for node, state in self.executions.items() if state == "CACHED"]

    @property
    def blessed(self) -> bool | None:
        return None if self.blessing is None else bool(self.blessing.properties.get("blessed"))

    @property
    def pushed(self) -> bool | None:
        return None if self.pushed_model is None else bool(self.pushed_model.properties.get("pushed"))


def open_store(metadata_path: Path):
    """A read-only ML Metadata store on the sqlite file at `metadata_path`."""
    from ml_metadata.metadata_store import metadata_store
    from ml_metadata.proto import metadata_store_pb2

    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = str(metadata_path)
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    return metadata_store.MetadataStore(config)


def property_value(value) -> Any:
    """The Python value of one MLMD property (a struct as a dict; a proto as None)."""
    kind = value.WhichOneof("value")
    if kind == "struct_value":
        from google.protobuf import json_format

        return json_format.MessageToDict(value.struct_value)
    if kind == "proto_value":
        return None
    return getattr(value, kind) if kind else None


def artifact_properties(artifact) -> dict[str, Any]:
    """An MLMD artifact's properties and custom properties as one plain dict."""
    props = {k: property_value(v) for k, v in artifact.properties.items()}
    props.update({k: property_value(v) for k, v in artifact.custom_properties.items()})
    return props


def find_run_id(metadata_path: Path, pipeline_name: str, since_ms: int = 0) -> str | None:
    """The id of the newest run of `pipeline_name` created at or after `since_ms` (epoch ms).

    LocalDagRunner names the run itself and does not return the name, so the runner asks
    for the newest run that started after it called the runner.
    """
    if not Path(metadata_path).is_file():
        return None
    store = open_store(metadata_path)
    pipeline = store.get_context_by_type_and_name(PIPELINE_CONTEXT, pipeline_name)
    if pipeline is None:
        return None
    pipeline_executions = {e.id for e in store.get_executions_by_context(pipeline.id)}
    candidates = []
    for context in store.get_contexts_by_type(PIPELINE_RUN_CONTEXT):
        if context.create_time_since_epoch < since_ms:
            continue
        executions = store.get_executions_by_context(context.id)
        if any(e.id in pipeline_executions for e in executions):
            candidates.append(context)
    if not candidates:
        return None
    return max(candidates, key=lambda c: (c.create_time_since_epoch, c.id)).name


def read_run_record(metadata_path: Path, pipeline_name: str, run_id: str | None) -> RunRecord:
    """The artifacts that run `run_id` of `pipeline_name` produced or reused."""
    if run_id is None or not Path(metadata_path).is_file():
        return RunRecord(pipeline_name=pipeline_name, run_id=run_id)
    from ml_metadata.proto import metadata_store_pb2

    store = open_store(metadata_path)
    run = store.get_context_by_type_and_name(PIPELINE_RUN_CONTEXT, run_id)
    if run is None:
        raise LookupError(f"{metadata_path} has no pipeline run {run_id!r}")
    execution_types = {t.id: t.name for t in store.get_execution_types()}
    artifact_types = {t.id: t.name for t in store.get_artifact_types()}
    state_name = metadata_store_pb2.Execution.State.Name
    prefix = f"{pipeline_name}."

    executions: dict[str, str] = {}
    found: dict[str, ArtifactInfo] = {}
    for execution in sorted(store.get_executions_by_context(run.id), key=lambda e: e.id):
        nodes = [
            c.name for c in store.get_contexts_by_execution(execution.id)
            if c.type == NODE_CONTEXT and c.name.startswith(prefix)
        ]
        if not nodes:  # another pipeline's execution
            continue
        node = nodes[0][len(prefix):]
        executions[node] = state_name(execution.last_known_state)
        if "resolver" in execution_types.get(execution.type_id, "").lower() or "resolver" in node.lower():
            continue  # a resolver's "outputs" are older artifacts it picked, not this run's
        outputs = {
            e.artifact_id: (e.path.steps[0].key if e.path.steps else "")
            for e in store.get_events_by_execution_ids([execution.id])
            if e.type == metadata_store_pb2.Event.OUTPUT
        }
        for artifact in store.get_artifacts_by_id(list(outputs)):
            if artifact.state != metadata_store_pb2.Artifact.LIVE:
                continue  # pending or abandoned: the output of a failed execution
            type_name = artifact_types.get(artifact.type_id, "")
            field = FIELD_BY_OUTPUT.get((type_name, outputs[artifact.id]))
            if field is None:
                continue
            if field in found:
                log.warning("run %s: %s output %r from both %s and %s; keeping %s's",
                            run_id, type_name, outputs[artifact.id], found[field].producer, node, node)
            found[field] = ArtifactInfo(artifact.id, type_name, Path(artifact.uri), node, artifact_properties(artifact))
    return RunRecord(pipeline_name=pipeline_name, run_id=run_id, executions=executions, **found)


def record_pipeline_run(metadata_path: Path, pipeline_name: str, since_ms: int = 0) -> RunRecord:
    """The newest run of the pipeline since `since_ms`; an empty record if none started."""
    return read_run_record(metadata_path, pipeline_name, find_run_id(metadata_path, pipeline_name, since_ms))


def read_push_record(version_dir: Path) -> dict[str, Any] | None:
    """The push record inside a pushed version directory, or None (pushed by something else)."""
    try:
        return json.loads((Path(version_dir) / PUSH_RECORD_FILE).read_text())
    except (OSError, ValueError):
        return None

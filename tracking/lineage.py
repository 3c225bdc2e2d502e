"""Where a pushed model version came from: `python -m tracking.lineage --profile P --version N`.

Also `make lineage VERSION=N [PROFILE=...]`. Everything is read from the records the runs
left, never from a side file:

- ML Metadata (`<output root>/metadata.db`): the PushedModel artifact with `pushed = 1` and
  `pushed_version = N` (the first one: a later run that found the same model already
  there records the same version); the CaptionPusher execution that produced it and its
  `pipeline_run` context (the TFX run id); then, input by input, back through the Trainer
  to Flickr8kExampleGen, whose exec properties hold the snapshot's `data_dir` and
  `data_fingerprint`. A step that TFX served from its cache reuses an older execution's
  output: the walk follows the execution that first produced each artifact.
- MLflow (the profile's tracking URI): the run tagged `pipeline_run_id = <that run id>`,
  its `profile` tag, a few key config params, BLEU-1..4, and where the full config is.

Exits 1, listing the versions that were pushed, when version N was never pushed; when the
push directory's version N was pushed by another profile (the Flickr8k profiles share one),
it names that profile.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections import deque
from pathlib import Path
from typing import Any

from configs import Config
from configs.cli import add_config_arguments, config_from_args
from models.contract import BLEU_METRICS
from tracking.lifecycle import find_run
from tracking.run_record import (
    NODE_CONTEXT,
    PIPELINE_CONTEXT,
    PIPELINE_RUN_CONTEXT,
    artifact_properties,
    open_store,
    property_value,
    read_push_record,
)

PUSHER_TYPE = "PushedModel"
EXAMPLE_GEN = "Flickr8kExampleGen"
TRAINER = "Trainer"
# Config values worth seeing at a glance (MLflow params, logged from the flattened config).
KEY_PARAMS = (
    "data.source", "features.backbone", "model.architecture", "model.embedding_dim", "model.hidden_dim",
    "text.max_length", "train.epochs", "train.batch_size", "train.learning_rate", "gate.min_bleu_4",
)
CONFIG_ARTIFACT = "config/config.json"  # the RunRecorder step logs the whole config here (tracking/artifacts.py)


class VersionNotFound(LookupError):
    """No PushedModel in ML Metadata has this version."""

    def __init__(self, version: int, pushed: list[int], metadata_path: Path):
        self.version, self.pushed = version, pushed
        listed = ", ".join(map(str, pushed)) if pushed else "none"
        super().__init__(f"model version {version} was never pushed according to {metadata_path}; pushed versions: {listed}")


@dataclasses.dataclass(frozen=True)
class Lineage:
    version: int
    pipeline_name: str
    pushed_destination: str | None
    pipeline_run_id: str | None
    data_dir: str | None
    data_fingerprint: str | None
    model_uri: str | None
    trainer_config: dict[str, Any]  # the Trainer's custom_config exec property (ML Metadata)
    metadata_path: str
    profile: str | None = None
    mlflow_tracking_uri: str | None = None
    mlflow_run_id: str | None = None
    config_params: dict[str, str] = dataclasses.field(default_factory=dict)
    config_uri: str | None = None  # the full config: an MLflow artifact of the run
    bleu: dict[str, float] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class _Store:
    """The few ML Metadata queries of the walk."""

    def __init__(self, metadata_path: Path):
        from ml_metadata.proto import metadata_store_pb2

        self.pb = metadata_store_pb2
        self.store = open_store(metadata_path)
        self.artifact_types = {t.id: t.name for t in self.store.get_artifact_types()}

    def events(self, *, artifact_id: int | None = None, execution_id: int | None = None):
        if artifact_id is not None:
            return self.store.get_events_by_artifact_ids([artifact_id])
        return self.store.get_events_by_execution_ids([execution_id])

    def producer(self, artifact_id: int):
        """The execution that first wrote the artifact (not a later one served from cache)."""
        ids = sorted({e.execution_id for e in self.events(artifact_id=artifact_id) if e.type == self.pb.Event.OUTPUT})
        executions = self.store.get_executions_by_id(ids)
        fresh = [x for x in executions if x.last_known_state != self.pb.Execution.CACHED]
        return min(fresh or executions, key=lambda x: x.id, default=None)

    def inputs(self, execution_id: int) -> dict[int, str]:
        """Input artifact id -> input key."""
        return {
            e.artifact_id: (e.path.steps[0].key if e.path.steps else "")
            for e in self.events(execution_id=execution_id)
            if e.type == self.pb.Event.INPUT
        }

    def contexts(self, execution_id: int, type_name: str) -> list[str]:
        return [c.name for c in self.store.get_contexts_by_execution(execution_id) if c.type == type_name]

    def node(self, execution) -> str:
        nodes = self.contexts(execution.id, NODE_CONTEXT)
        return nodes[0].split(".", 1)[-1] if nodes else ""


def _exec_props(execution) -> dict[str, Any]:
    props = {k: property_value(v) for k, v in execution.properties.items()}
    props.update({k: property_value(v) for k, v in execution.custom_properties.items()})
    return props


def pushed_models(store: _Store) -> list:
    try:
        artifacts = store.store.get_artifacts_by_type(PUSHER_TYPE)
    except Exception:  # the type was never registered: nothing was ever pushed
        return []
    live = [a for a in artifacts if a.state == store.pb.Artifact.LIVE]
    return sorted((a for a in live if artifact_properties(a).get("pushed") == 1), key=lambda a: a.id)


def read_mlmd_lineage(metadata_path: Path, version: int, pipeline_name: str | None = None) -> Lineage:
    """The ML Metadata half of the lineage of pushed `version`; VersionNotFound if none.

    With `pipeline_name`, only that pipeline's pushes count: a sweep (`<name>-sweep`)
    shares the metadata store and numbers its own pushes from 1 too.
    """
    if not Path(metadata_path).is_file():
        raise VersionNotFound(version, [], metadata_path)
    store = _Store(metadata_path)
    pushed = pushed_models(store)
    if pipeline_name is not None:
        pushed = [a for a in pushed if pipeline_name in _pusher_pipelines(store, a)]
    matches = [a for a in pushed if artifact_properties(a).get("pushed_version") == version]
    if not matches:
        versions = sorted({int(v) for a in pushed if (v := artifact_properties(a).get("pushed_version")) is not None})
        raise VersionNotFound(version, versions, metadata_path)
    artifact = matches[0]
    pusher = store.producer(artifact.id)
    if pusher is None:
        raise LookupError(f"no execution produced PushedModel {artifact.id} in {metadata_path}")
    runs = store.contexts(pusher.id, PIPELINE_RUN_CONTEXT)
    pipelines = store.contexts(pusher.id, PIPELINE_CONTEXT)
    model_ids = [a for a, key in store.inputs(pusher.id).items() if key == "model"]
    model = store.store.get_artifacts_by_id(model_ids)[0] if model_ids else None

    # Breadth-first from the pusher's inputs back to the ingestion of the snapshot.
    found: dict[str, Any] = {}
    queue, seen = deque([pusher]), {pusher.id}
    while queue:
        execution = queue.popleft()
        node = store.node(execution)
        if node in (EXAMPLE_GEN, TRAINER) and node not in found:
            found[node] = execution
        if node == EXAMPLE_GEN:
            continue
        for artifact_id in sorted(store.inputs(execution.id)):
            producer = store.producer(artifact_id)
            if producer is not None and producer.id not in seen and "resolver" not in store.node(producer).lower():
                seen.add(producer.id)
                queue.append(producer)
    ingest = _exec_props(found[EXAMPLE_GEN]) if EXAMPLE_GEN in found else {}
    trainer = _exec_props(found[TRAINER]) if TRAINER in found else {}
    custom = trainer.get("custom_config")
    try:
        trainer_config = json.loads(custom) if isinstance(custom, str) else dict(custom or {})
    except ValueError:
        trainer_config = {}
    props = artifact_properties(artifact)
    return Lineage(
        version=version,
        pipeline_name=pipelines[0] if pipelines else "",
        pushed_destination=props.get("pushed_destination"),
        pipeline_run_id=runs[0] if runs else None,
        data_dir=ingest.get("data_dir"),
        data_fingerprint=ingest.get("data_fingerprint"),
        model_uri=model.uri if model is not None else None,
        trainer_config=trainer_config,
        metadata_path=str(metadata_path),
    )


def _pusher_pipelines(store: _Store, artifact: Any) -> list[str]:
    """Names of the pipelines whose pusher produced `artifact`."""
    pusher = store.producer(artifact.id)
    return store.contexts(pusher.id, PIPELINE_CONTEXT) if pusher is not None else []


def add_mlflow(lineage: Lineage, tracking_uri: str, experiment: str) -> Lineage:
    """The MLflow run that recorded the lineage's pipeline run: profile, key params, BLEU."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None or not lineage.pipeline_run_id:
        return dataclasses.replace(lineage, mlflow_tracking_uri=tracking_uri)
    run_id = find_run(client, found.experiment_id, lineage.pipeline_run_id)  # the one every step logs into
    if run_id is None:
        return dataclasses.replace(lineage, mlflow_tracking_uri=tracking_uri)
    run = client.get_run(run_id)
    return dataclasses.replace(
        lineage,
        mlflow_tracking_uri=tracking_uri,
        mlflow_run_id=run.info.run_id,
        profile=run.data.tags.get("profile"),
        config_params={k: run.data.params[k] for k in KEY_PARAMS if k in run.data.params},
        config_uri=f"{run.info.artifact_uri.rstrip('/')}/{CONFIG_ARTIFACT}",
        bleu={k: run.data.metrics[k] for k in BLEU_METRICS if k in run.data.metrics},
    )


def lineage(config: Config, version: int) -> Lineage:
    """The lineage of pushed model `version` of `config`'s pipeline (ML Metadata + MLflow)."""
    found = read_mlmd_lineage(config.output_root / "metadata.db", version, config.pipeline.name)
    return add_mlflow(found, config.mlflow_tracking_uri, config.mlflow.experiment)


def other_profile_hint(config: Config, version: int) -> str | None:
    """Where to look when `version` was pushed by another profile: the Flickr8k profiles
    share one push directory, but each has its own ML Metadata store."""
    record = read_push_record(config.push_dir / str(version))
    card = record.get("card") if isinstance(record, dict) else None
    profile = card.get("profile") if isinstance(card, dict) else None
    if not profile or profile == config.profile:
        return None
    return (f"version {version} under {config.push_dir} was pushed by profile {profile}: "
            f"make lineage VERSION={version} PROFILE={profile}")


def format_text(item: Lineage) -> str:
    def show(value: Any) -> str:
        return "unknown" if value in (None, "", {}) else str(value)

    lines = [
        f"model version {item.version} ({show(item.pushed_destination)})",
        f"  data snapshot:    {show(item.data_dir)}",
        f"  data fingerprint: {show(item.data_fingerprint)}",
        f"  profile:          {show(item.profile)}",
    ]
    lines += [f"    {k} = {v}" for k, v in item.config_params.items()]
    lines += [
        f"  full config:      {show(item.config_uri)}",
        f"  pipeline:         {show(item.pipeline_name)}, TFX run {show(item.pipeline_run_id)}",
        f"  model:            {show(item.model_uri)}",
        f"  MLflow run:       {show(item.mlflow_run_id)} on {show(item.mlflow_tracking_uri)}",
        "  BLEU:             " + (", ".join(f"{k} {v:.4f}" for k, v in item.bleu.items()) or "unknown"),
        f"  ML Metadata:      {item.metadata_path}",
    ]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tracking.lineage",
        description="Show where a pushed model version came from: data snapshot, config, TFX run, MLflow run, BLEU.",
    )
    add_config_arguments(parser)
    parser.add_argument("--version", type=int, required=True, help="the pushed model version (TF Serving's directory name)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    return parser


def main(argv: list[str] | None = None) -> int:
    from configs.cli import quiet_third_party_noise

    args = build_parser().parse_args(argv)
    quiet_third_party_noise()
    config = config_from_args(args)
    try:
        item = lineage(config, args.version)
    except VersionNotFound as e:
        print(f"error: {e}", file=sys.stderr)
        if hint := other_profile_hint(config, args.version):
            print(hint, file=sys.stderr)
        return 1
    print(json.dumps(item.to_dict(), indent=2, sort_keys=True) if args.json else format_text(item))
    return 0


if __name__ == "__main__":
    sys.exit(main())

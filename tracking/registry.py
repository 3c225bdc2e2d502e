"""The pushed model in MLflow: logged once as a pyfunc model (tracking/model.py) with a
signature that lists every serving signature's outputs and a small JPEG as input example,
and registered as a version of the registered model with the alias `production`.

A TFX model is logged once: a later pipeline run that reuses it from TFX's cache links the
logged model it already has as an input (tag `tfx_model_uri`), and a push already in the
registry (same version and destination) is not registered again.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import logging
import os
import warnings
from pathlib import Path
from typing import Any, Iterator, Mapping

from tracking.lifecycle import quoted

log = logging.getLogger(__name__)

MODEL_NAME = "model"  # the logged model's name within the run
PRODUCTION_ALIAS = "production"
MODEL_URI_TAG = "tfx_model_uri"
PROGRESS_BAR_ENV = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
DEFAULT_SIGNATURE = "serving_default"
# SavedModel dtypes -> MLflow column types.
_DTYPES = {"DT_STRING": "string", "DT_FLOAT": "float", "DT_DOUBLE": "double", "DT_INT32": "integer",
           "DT_INT64": "long", "DT_BOOL": "boolean"}


@contextlib.contextmanager
def using_tracking_uri(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API at `uri` for the block, then restore what was set before."""
    import mlflow

    # Public API only: None means "nothing set", and set_tracking_uri(None) restores exactly that.
    previous = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    previous_bar = os.environ.get(PROGRESS_BAR_ENV)
    mlflow.set_tracking_uri(uri)
    os.environ[PROGRESS_BAR_ENV] = "false"  # no tqdm bars in the pipeline's log
    try:
        yield
    finally:
        if previous_bar is None:
            os.environ.pop(PROGRESS_BAR_ENV, None)
        else:
            os.environ[PROGRESS_BAR_ENV] = previous_bar
        mlflow.set_tracking_uri(previous)


def signature_outputs(export_dir: Path) -> dict[str, dict[str, tuple[str, int]]]:
    """Each serving signature's outputs: name -> (MLflow type, rank without the batch axis),
    read from saved_model.pb (no model load)."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((Path(export_dir) / "saved_model.pb").read_bytes())
    from tensorflow.core.framework import types_pb2

    signatures = {}
    for name, sig in saved.meta_graphs[0].signature_def.items():
        if name.startswith("__"):  # __saved_model_init_op
            continue
        signatures[name] = {
            out: (_DTYPES.get(types_pb2.DataType.Name(info.dtype), "string"), max(len(info.tensor_shape.dim) - 1, 0))
            for out, info in sig.outputs.items()
        }
    return signatures


def model_signature(signatures: Mapping[str, Mapping[str, tuple[str, int]]]):
    """One bytes column in; out, the union of every signature's outputs (only `caption` is
    in all of them, the rest are optional); the param `signature` picks which one runs."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema
    from mlflow.types.schema import Array

    columns: dict[str, tuple[str, int]] = {}
    for outputs in signatures.values():
        columns.update(outputs)
    everywhere = set.intersection(*(set(o) for o in signatures.values())) if signatures else set()

    def column(name: str, kind: str, rank: int) -> ColSpec:
        spec: Any = kind
        for _ in range(rank):
            spec = Array(spec)
        return ColSpec(spec, name, required=name in everywhere)

    return ModelSignature(
        # One unnamed bytes column: a DataFrame of any column name, a list of bytes or one
        # bytes value all pass MLflow's schema check.
        inputs=Schema([ColSpec("binary")]),
        outputs=Schema([column(name, *columns[name]) for name in sorted(columns)]),
        params=ParamSchema([ParamSpec("signature", "string", DEFAULT_SIGNATURE)]),
    )


def find_logged_model(client, experiment_id: str, tfx_model_uri: str):
    """The logged model of this TFX model (by tag), or None; only a complete one (READY):
    MLflow creates the entry before it uploads the files, so a failed upload leaves one."""
    from mlflow.entities import LoggedModelStatus

    found = client.search_logged_models(
        [experiment_id], filter_string=f"tags.{MODEL_URI_TAG} = {quoted(tfx_model_uri)}",
        order_by=[{"field_name": "creation_time", "ascending": False}],
    )
    ready = [m for m in found if m.status == LoggedModelStatus.READY]
    return ready[0] if ready else None


def log_model(export_dir: Path, tags: Mapping[str, str], input_example: bytes | None):
    """Log the serving SavedModel as the pyfunc `model` of the active run; its ModelInfo."""
    import mlflow
    import pandas as pd

    from tracking import model as model_code

    example = None if input_example is None else pd.DataFrame({model_code.IMAGE_COLUMN: [input_example]})
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.filterwarnings("ignore", category=UserWarning)  # MLflow's notes on model loading
        return mlflow.pyfunc.log_model(
            name=MODEL_NAME,
            python_model=str(Path(model_code.__file__)),
            artifacts={model_code.SAVED_MODEL_ARTIFACT: str(export_dir)},
            signature=model_signature(signature_outputs(export_dir)),
            input_example=example,
            pip_requirements=[f"{pkg}=={importlib.metadata.version(pkg)}" for pkg in ("mlflow", "tensorflow", "pandas")],
            tags=dict(tags),
        )


def register_push(client, name: str, model_uri: str, pushed: Mapping[str, str], tags: Mapping[str, str]) -> str:
    """The registry version of this push (found by its version and destination, or created
    from `model_uri`), now holding the alias `production`. Returns the version number."""
    import mlflow

    versions = _model_versions(client, name)
    existing = [v for v in versions if all(v.tags.get(k) == value for k, value in pushed.items())]
    if existing:  # e.g. a cached rerun: the very push this version records
        version = max(existing, key=lambda v: int(v.version))
        log.info("MLflow: push %s is already %s version %s", pushed.get("pushed_version"), name, version.version)
        newest = max(int(v.version) for v in versions)
        if int(version.version) < newest:  # an older push reused from the cache: production stays
            log.info("MLflow: %s@%s stays on the newer version %d", name, PRODUCTION_ALIAS, newest)
            return str(version.version)
    else:
        with contextlib.redirect_stderr(io.StringIO()):  # MLflow prints what the next line logs
            version = mlflow.register_model(model_uri, name, tags={**pushed, **tags})
    client.set_registered_model_alias(name, PRODUCTION_ALIAS, version.version)
    log.info("MLflow: %s@%s -> version %s", name, PRODUCTION_ALIAS, version.version)
    return str(version.version)


def _model_versions(client, name: str) -> list:
    return list(client.search_model_versions(f"name = {quoted(name)}"))

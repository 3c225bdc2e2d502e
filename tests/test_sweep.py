"""The sweep: its file is checked before anything runs, and each variant is a tagged MLflow run."""

from __future__ import annotations

from pathlib import Path

import pytest

from configs import ConfigError
from pipelines import sweep

REPO = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    return path


def test_the_shipped_sweep_loads_and_varies_what_it_says():
    profile, variants = sweep.load_sweep(REPO / "mlflow" / "sweep_flickr8k_lite0.yaml")
    assert profile == "flickr8k_lite0"
    by_name = dict(variants)
    assert by_name["merge"].model.architecture == "merge"
    assert by_name["attention"].model.architecture == "attention"
    assert by_name["attention-min_count3"].text.min_count == 3
    assert by_name["attention-hidden256"].model.hidden_dim == 256
    assert by_name["attention"].model.hidden_dim != 256
    assert by_name["attention-lr_decay"].train.lr_decay_factor == 0.5
    assert by_name["attention-coverage"].model.attention_coverage == 1.0
    assert by_name["attention"].train.lr_decay_factor == 1.0


def test_only_keeps_the_named_variants_and_refuses_unknown_names(tmp_path):
    path = write(tmp_path, "profile: smoke\nvariants:\n  - {name: a}\n  - {name: b}\n  - {name: c}\n")
    _, variants = sweep.load_sweep(path, only=["c", "a"])
    assert [name for name, _ in variants] == ["a", "c"]
    with pytest.raises(ConfigError, match="no variant named d"):
        sweep.load_sweep(path, only=["a", "d"])


@pytest.mark.parametrize(
    "text,named",
    [
        ("profile: smoke\nvariants:\n  - {name: a, set: {model.hidden_dims: 3}}\n", "'a'"),
        ("profile: smoke\nvariants:\n  - {name: a}\n  - {name: a}\n", "two variants are named 'a'"),
        ("profile: smoke\nvariant: []\n", "unknown keys ['variant']"),
        ("profile: smoke\nvariants: []\n", "at least one variant"),
    ],
)
def test_a_bad_sweep_file_fails_before_any_run_naming_the_problem(tmp_path, text, named):
    with pytest.raises(ConfigError) as error:
        sweep.load_sweep(write(tmp_path, text))
    assert named in str(error.value)


def test_sweep_runs_stay_out_of_the_production_lineage_pushes_and_registry(tmp_path):
    _, [(_, config)] = sweep.load_sweep(write(tmp_path, "profile: smoke\nvariants:\n  - {name: a}\n"))
    moved = sweep.away_from_production(config)
    assert Path(moved.push.base_dir) == config.output_root / "sweep" / "serving"
    assert moved.push_dir != config.push_dir and moved.model == config.model
    # Its own lineage: the gate's baseline is never a sweep model for production runs.
    assert moved.pipeline.name == f"{config.pipeline.name}-sweep"
    assert moved.mlflow.registered_model == f"{config.mlflow.registered_model}-sweep"
    assert moved.output_root == config.output_root and moved.mlflow_tracking_uri == config.mlflow_tracking_uri


@pytest.mark.e2e
def test_a_smoke_sweep_gives_one_tagged_mlflow_run_per_variant_and_computes_features_once(tmp_path):
    import mlflow

    from tests import mlmd

    root = tmp_path / "out"
    overrides = {
        "pipeline.output_root": str(root),
        "data.data_dir": str(root / "data" / "synthetic"),
        "push.base_dir": str(root / "serving" / "captioner"),
        "train.epochs": 3,
        # Blessed whatever they score, so the sweep pushes and registers (away from production).
        "gate.min_bleu_4": 0.0,
        "gate.min_bleu_1": 0.0,
        "gate.max_bleu_4_drop": 1.0,
    }
    sweep_file = write(
        tmp_path,
        "profile: smoke\nvariants:\n  - {name: wide, set: {model.hidden_dim: 64}}\n"
        "  - {name: narrow, set: {model.hidden_dim: 32}}\n",
    )
    _, variants = sweep.load_sweep(sweep_file, overrides)
    results = sweep.run_sweep(variants, sweep_id="test-sweep")

    assert [r["status"] for r in results] == ["ok", "ok"]
    mlflow.set_tracking_uri(variants[0][1].mlflow_tracking_uri)
    runs = mlflow.search_runs(
        experiment_names=[variants[0][1].mlflow.experiment],
        filter_string="tags.sweep = 'test-sweep'",
        output_format="list",
    )
    by_variant = {r.data.tags["sweep_variant"]: r for r in runs}
    assert set(by_variant) == {"wide", "narrow"}
    assert by_variant["wide"].data.params["model.hidden_dim"] == "64"
    assert by_variant["narrow"].data.params["model.hidden_dim"] == "32"
    assert all("bleu_4" in r.data.metrics for r in runs)
    # Ingestion and features ran once; the second variant took them from TFX's cache.
    from ml_metadata.proto import metadata_store_pb2

    states = [e.last_known_state for e in mlmd.executions(root / "metadata.db", "FeatureExtractor")]
    assert states == [metadata_store_pb2.Execution.COMPLETE, metadata_store_pb2.Execution.CACHED]
    assert not (root / "serving" / "captioner").exists()  # nothing reached the served models
    client = mlflow.MlflowClient()
    assert client.search_registered_models(f"name = '{variants[0][1].mlflow.registered_model}'") == []
    # `make lineage VERSION=1` is about the served models: the sweep's own version 1 (same
    # metadata store) is not taken for it.
    from tracking import lineage

    assert (root / "sweep" / "serving" / "1").is_dir()
    with pytest.raises(lineage.VersionNotFound) as error:
        lineage.lineage(variants[0][1], 1)
    assert error.value.pushed == []
    swept = lineage.read_mlmd_lineage(root / "metadata.db", 1, f"{variants[0][1].pipeline.name}-sweep")
    assert swept.pushed_destination == str(root / "sweep" / "serving" / "1")

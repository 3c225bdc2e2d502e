"""A small hyper-parameter sweep: one full pipeline run per variant, compared in MLflow.

Run `python -m pipelines.sweep mlflow/sweep_flickr8k_lite0.yaml` (or `make sweep`). The
sweep file names a profile and a list of variants, each a name and config overrides:

    profile: flickr8k_lite0
    variants:
      - {name: merge, set: {model.architecture: merge}}
      - {name: attention-h256, set: {model.hidden_dim: 256}}

Every variant is an ordinary pipeline run of that profile with those overrides (the same
pipeline root, ML Metadata and sweep lineage, so ingestion, validation and features come
from TFX's cache after the first variant of the first sweep) and one MLflow run, tagged
`sweep` (the sweep's id) and `sweep_variant`, so the UI filters and compares them:
`tags.sweep = '<id>'`. Sweep runs
stay out of production unless `--push-to-serving` is given: their own pipeline lineage
(`<name>-sweep`, so the gate never compares a production run with a sweep model), pushes
into `<output root>/sweep/serving` and registry name `<registered model>-sweep`. A failed
variant is reported and the sweep goes on.
`--only NAME` runs some variants; `--sweep-id` adds them to an earlier sweep's comparison.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

from configs import Config, ConfigError, load_config

log = logging.getLogger("pipelines.sweep")


def load_sweep(
    path: Path, overrides: dict[str, Any] | None = None, only: list[str] | None = None
) -> tuple[str, list[tuple[str, Config]]]:
    """(profile, [(variant name, config)]) from a sweep file; every config is checked first.

    `only` keeps the named variants (in the file's order); an unknown name is an error.
    """
    spec = yaml.safe_load(Path(path).read_text()) or {}
    unknown = set(spec) - {"profile", "variants"}
    if unknown:
        raise ConfigError(f"{path}: unknown keys {sorted(unknown)} (expected profile, variants)")
    profile, variants = spec.get("profile"), spec.get("variants") or []
    if not profile or not variants:
        raise ConfigError(f"{path}: needs a profile and at least one variant")
    configs, names = [], set()
    for i, variant in enumerate(variants):
        name = str(variant.get("name") or f"variant-{i + 1}")
        if name in names:
            raise ConfigError(f"{path}: two variants are named {name!r}")
        names.add(name)
        try:
            config = load_config(profile, {**(overrides or {}), **(variant.get("set") or {})})
        except ConfigError as e:
            raise ConfigError(f"{path}: variant {name!r}: {e}") from e
        configs.append((name, config))
    missing = sorted(set(only or ()) - names)
    if missing:
        raise ConfigError(f"{path}: no variant named {', '.join(missing)} (variants: {', '.join(sorted(names))})")
    if only:
        configs = [(name, config) for name, config in configs if name in only]
    return profile, configs


def away_from_production(config: Config) -> Config:
    """The config of a sweep run: its own lineage, push dir and registry name.

    Pushes go to `<output root>/sweep/serving`; the pipeline is named `<name>-sweep`, so the
    gate compares variants with earlier sweep models, never with the served lineage, and a
    later production run is not compared with a sweep model; blessed variants register as
    `<registered model>-sweep`, so the `production` alias keeps pointing at the served model.
    Variants share one cache (ingestion and features run once per sweep lineage).
    """
    return dataclasses.replace(
        config,
        pipeline=dataclasses.replace(config.pipeline, name=f"{config.pipeline.name}-sweep"),
        push=dataclasses.replace(config.push, base_dir=str(config.output_root / "sweep" / "serving")),
        mlflow=dataclasses.replace(config.mlflow, registered_model=f"{config.mlflow.registered_model}-sweep"),
    )


def run_sweep(variants: list[tuple[str, Config]], sweep_id: str, push_to_serving: bool = False) -> list[dict[str, Any]]:
    """Runs the variants one after another; returns one summary per variant."""
    import mlflow

    from pipelines import local_runner

    results = []
    for i, (name, config) in enumerate(variants, start=1):
        if not push_to_serving:
            config = away_from_production(config)
        log.info("sweep %s: variant %d/%d %r", sweep_id, i, len(variants), name)
        started = time.monotonic()
        result: dict[str, Any] = {"variant": name}
        try:
            paths = local_runner.run(config)
            result.update(status="ok", mlflow_run_id=paths.mlflow_run_id)
        except Exception as e:  # noqa: BLE001 - one variant failing must not end the sweep
            log.exception("sweep %s: variant %r failed", sweep_id, name)
            result.update(status=f"failed: {type(e).__name__}: {e}", mlflow_run_id=None)
        result["minutes"] = round((time.monotonic() - started) / 60, 1)
        if result["mlflow_run_id"]:
            mlflow.set_tracking_uri(config.mlflow_tracking_uri)
            client = mlflow.MlflowClient()
            client.set_tag(result["mlflow_run_id"], "sweep", sweep_id)
            client.set_tag(result["mlflow_run_id"], "sweep_variant", name)
            metrics = client.get_run(result["mlflow_run_id"]).data.metrics
            result.update({k: metrics.get(k) for k in ("bleu_1", "bleu_4", "cider", "best_val_loss", "train_seconds")})
        results.append(result)
    return results


def main(argv: list[str] | None = None) -> int:
    from configs.config import parse_override
    from configs.cli import quiet_third_party_noise

    parser = argparse.ArgumentParser(prog="python -m pipelines.sweep", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_file", type=Path)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="an override for every variant, e.g. --set train.epochs=2 (repeatable)")
    parser.add_argument("--push-to-serving", action="store_true", help="let blessed variants push to push.base_dir")
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help="run only this variant (repeatable)")
    parser.add_argument("--sweep-id", help="tag the runs with this id, e.g. an earlier sweep's, to compare them together")
    args = parser.parse_args(argv)
    quiet_third_party_noise()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        profile, variants = load_sweep(args.sweep_file, dict(parse_override(o) for o in args.overrides), args.only)
    except (ConfigError, OSError, yaml.YAMLError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    sweep_id = args.sweep_id or f"{profile}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    results = run_sweep(variants, sweep_id, args.push_to_serving)
    print(f"\nsweep {sweep_id} ({len(results)} variants); MLflow filter: tags.sweep = '{sweep_id}'")
    keys = ("variant", "status", "bleu_1", "bleu_4", "cider", "best_val_loss", "minutes")
    print(" | ".join(keys))
    for r in results:
        print(" | ".join(_cell(r.get(k)) for k in keys))
    return 0 if all(r["status"] == "ok" for r in results) else 1


def _cell(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


if __name__ == "__main__":
    sys.exit(main())

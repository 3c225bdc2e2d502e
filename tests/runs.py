"""Configs for test pipeline runs: the smoke profile, isolated under a temporary root."""

from __future__ import annotations

from pathlib import Path

from configs import Config, load_config


def smoke_config(output_root: Path, profile: str = "smoke", **overrides) -> Config:
    """The smoke profile (or `profile`, e.g. smoke_attention) writing under `output_root`
    (data and pushes included), plus overrides."""
    base = {
        "pipeline.output_root": str(output_root),
        "data.data_dir": str(output_root / "data" / "synthetic"),
        "push.base_dir": str(output_root / "serving" / "captioner"),
    }
    return load_config(profile, {**base, **overrides}, env={})

"""Configs for test pipeline runs: the smoke profile, isolated under a temporary root."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from configs import Config, load_config
from configs.config import TrainerSections


def smoke_config(output_root: Path, profile: str = "smoke", **overrides) -> Config:
    """The smoke profile (or `profile`, e.g. smoke_attention) writing under `output_root`
    (data and pushes included), plus overrides."""
    base = {
        "pipeline.output_root": str(output_root),
        "data.data_dir": str(output_root / "data" / "synthetic"),
        "push.base_dir": str(output_root / "serving" / "captioner"),
    }
    return load_config(profile, {**base, **overrides}, env={})


def trainer_sections(profile: str = "smoke_attention", **changes) -> TrainerSections:
    """The profile's training sections with flat changes (`learning_rate=0.01`) applied to the
    one section that has that field; a name two sections share is an error."""
    sections = TrainerSections.of(load_config(profile, env={}))
    return with_changes(sections, **changes)


def with_changes(sections: TrainerSections, **changes) -> TrainerSections:
    """`sections` with each flat change put into the section that owns the field."""
    per_section: dict[str, dict] = {}
    for key, value in changes.items():
        owners = [
            f.name for f in dataclasses.fields(sections)
            if key in {g.name for g in dataclasses.fields(getattr(sections, f.name))}
        ]
        if len(owners) != 1:
            raise KeyError(f"{key!r} belongs to {owners or 'no section'}; change it in one section")
        per_section.setdefault(owners[0], {})[key] = value
    return dataclasses.replace(
        sections, **{name: dataclasses.replace(getattr(sections, name), **kw) for name, kw in per_section.items()}
    )

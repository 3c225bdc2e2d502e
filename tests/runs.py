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
    first section that has that field (train before scst, text before scst); a dotted name
    (`**{"scst.learning_rate": 1e-4}`) picks the section."""
    sections = TrainerSections.of(load_config(profile, env={}))
    return with_changes(sections, **changes)


def with_changes(sections: TrainerSections, **changes) -> TrainerSections:
    """`sections` with each change put into its section: `section.key`, or a plain key into
    the first section (in TrainerSections' order) that has the field."""
    per_section: dict[str, dict] = {}
    for key, value in changes.items():
        if "." in key:
            owner, key = key.split(".", 1)
        else:
            owners = [
                f.name for f in dataclasses.fields(sections)
                if key in {g.name for g in dataclasses.fields(getattr(sections, f.name))}
            ]
            if not owners:
                raise KeyError(f"{key!r} belongs to no section")
            owner = owners[0]
        per_section.setdefault(owner, {})[key] = value
    return dataclasses.replace(
        sections, **{name: dataclasses.replace(getattr(sections, name), **kw) for name, kw in per_section.items()}
    )

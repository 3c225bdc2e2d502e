"""`make lineage` when the version was pushed by another profile: the Flickr8k profiles share
one push directory but each has its own ML Metadata store, so the error names the profile."""

from __future__ import annotations

from pathlib import Path

from components.caption_pusher import push


def pushed_by(base: Path, tmp_path: Path, profile: str, content: str) -> int:
    model = tmp_path / f"model-{content}"
    (model / "variables").mkdir(parents=True)
    (model / "saved_model.pb").write_bytes(content.encode())
    (model / "variables" / "variables.index").write_bytes(content.encode())
    return push.push_model(model, base, source={"card": {"profile": profile}}).version


def lineage_of(tmp_path: Path, base: Path, version: int) -> list[str]:
    return ["--profile", "flickr8k_lite0", "--set", f"pipeline.output_root={tmp_path / 'out'}",
            "--set", f"push.base_dir={base}", "--version", str(version)]


def test_a_version_another_profile_pushed_is_not_found_and_the_error_names_that_profile(tmp_path, capsys):
    from tracking import lineage

    base = tmp_path / "serving" / "captioner"
    assert pushed_by(base, tmp_path, "flickr8k_lite0", "a") == 1
    assert pushed_by(base, tmp_path, "flickr8k_lite0_scst", "b") == 2

    assert lineage.main(lineage_of(tmp_path, base, 2)) == 1
    err = capsys.readouterr().err
    assert "model version 2 was never pushed" in err
    assert f"version 2 under {base} was pushed by profile flickr8k_lite0_scst" in err
    assert "make lineage VERSION=2 PROFILE=flickr8k_lite0_scst" in err

    assert lineage.main(lineage_of(tmp_path, base, 1)) == 1  # its own profile's push: no hint
    assert "pushed by profile" not in capsys.readouterr().err

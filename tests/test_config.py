"""Tests of configs/config.py: profiles load, typos and wrong types fail loudly, env overrides."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import configs
from configs import Config, ConfigError, available_profiles, load_config, parse_override
from configs.config import REPO_ROOT


def write_profile(directory: Path, name: str, text: str) -> Path:
    path = directory / f"{name}.yaml"
    path.write_text(text)
    return path


def test_the_expected_profiles_exist() -> None:
    assert {"smoke", "flickr8k"} <= set(available_profiles())


@pytest.mark.parametrize("profile", available_profiles())
def test_every_profile_loads(profile: str) -> None:
    config = load_config(profile, env={})

    assert isinstance(config, Config)
    assert config.profile == profile
    assert config.data.train_split in config.data.splits
    assert config.data.eval_split in config.data.splits
    assert config.pipeline.name
    # Relative profile paths are anchored at the repo root, whatever the cwd.
    assert config.output_root.is_absolute() and config.data_dir.is_absolute()
    assert (REPO_ROOT / config.validation.schema_dir / "schema.pbtxt").is_file()


def test_smoke_profile_values() -> None:
    config = load_config("smoke", env={})

    assert config.data.source == "synthetic"
    assert config.data.splits == ("train", "dev", "test")
    assert config.data.synthetic.split_fractions == (0.7, 0.15, 0.15)
    assert config.output_root == REPO_ROOT / "outputs" / "smoke"
    assert config.ingest.max_skipped_fraction == 0.01


def test_unknown_profile_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError) as error:
        load_config("smokee", env={})
    assert "smokee" in str(error.value)
    assert "smoke" in str(error.value).split("known profiles:")[1]


@pytest.mark.parametrize(
    ("dotted", "named"),
    [
        ("bogus", "bogus"),
        ("pipline.name", "pipline"),  # the misspelt section itself is what is unknown
        ("data.synthetic.nmu_images", "data.synthetic.nmu_images"),
        ("beam.direct_num_worker", "beam.direct_num_worker"),
        ("ingest.max_skiped_fraction", "ingest.max_skiped_fraction"),
    ],
)
def test_unknown_key_names_the_dotted_key(dotted: str, named: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_config("smoke", {dotted: 1}, env={})
    assert f"unknown config key {named!r}" in str(error.value)


def test_unknown_key_in_a_profile_file_names_the_dotted_key(tmp_path: Path) -> None:
    path = write_profile(
        tmp_path, "typo", "extends: smoke\ndata:\n  synthetic:\n    nmu_images: 5\n"
    )
    with pytest.raises(ConfigError, match=r"'data\.synthetic\.nmu_images'"):
        load_config(str(path), env={})


@pytest.mark.parametrize(
    ("dotted", "value"),
    [
        ("data.synthetic.num_images", "many"),
        ("data.synthetic.num_images", 2.5),
        ("pipeline.enable_cache", "yes"),
        ("ingest.max_image_pixels", True),  # a bool is not an int here
        ("serving.max_image_pixels", "40M"),
        ("ingest.max_skipped_fraction", "1%"),
        ("data.splits", "train"),
        ("data.synthetic.split_fractions", [0.5, 0.5]),
        ("beam.extra_args", ["--ok", 3]),
        ("pipeline.name", None),
    ],
)
def test_wrong_type_names_the_key(dotted: str, value: object) -> None:
    with pytest.raises(ConfigError) as error:
        load_config("smoke", {dotted: value}, env={})
    assert repr(dotted) in str(error.value)


def test_a_section_given_a_scalar_is_an_error() -> None:
    with pytest.raises(ConfigError, match="beam must be a mapping"):
        load_config("smoke", {"beam": 3}, env={})


@pytest.mark.parametrize(
    ("dotted", "value", "named"),
    [
        ("data.source", "imagenet", "data.source"),
        ("beam.direct_running_mode", "threads", "beam.direct_running_mode"),
        ("ingest.max_skipped_fraction", 1.5, "ingest.max_skipped_fraction"),
        ("data.eval_split", "val", "'val'"),
        ("model.architecture", "transformer", "model.architecture"),
        ("serving.max_image_pixels", 0, "serving.max_image_pixels"),
    ],
)
def test_invalid_values_are_errors(dotted: str, value: object, named: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_config("smoke", {dotted: value}, env={})
    assert named in str(error.value)


def test_missing_required_key_is_named(tmp_path: Path) -> None:
    path = write_profile(
        tmp_path,
        "partial",
        "pipeline:\n  name: p\ndata:\n  source: synthetic\n  data_dir: d\n",
    )
    with pytest.raises(ConfigError, match=r"missing config key 'pipeline\.output_root'"):
        load_config(str(path), env={})


def test_config_is_frozen() -> None:
    config = load_config("smoke", env={})

    with pytest.raises(dataclasses.FrozenInstanceError):
        config.pipeline.name = "changed"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.data = config.data  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.data.synthetic.num_images = 3  # type: ignore[misc]
    # Lists from YAML become tuples, so they cannot be changed in place either.
    assert isinstance(config.data.splits, tuple)
    assert isinstance(config.beam.extra_args, tuple)


def test_overrides_apply_and_convert() -> None:
    config = load_config(
        "smoke",
        {
            "ingest.max_skipped_fraction": 0,  # an int where a float is expected is fine
            "data.synthetic.num_images": 7,
            "data.splits": ["train", "dev"],
            "beam.extra_args": ["--runner=DirectRunner"],
            "pipeline.enable_cache": False,
        },
        env={},
    )

    assert config.ingest.max_skipped_fraction == 0.0
    assert isinstance(config.ingest.max_skipped_fraction, float)
    assert config.data.synthetic.num_images == 7
    assert config.data.synthetic.seed == 0  # untouched siblings keep the profile's value
    assert config.data.splits == ("train", "dev")
    assert config.beam.extra_args == ("--runner=DirectRunner",)
    assert config.pipeline.enable_cache is False
    flat = config.to_flat_dict()
    assert flat["data.synthetic.num_images"] == 7
    assert flat["profile"] == "smoke"


def test_env_vars_override_the_paths() -> None:
    config = load_config(
        "smoke", env={"CAPTIONER_DATA_DIR": "/srv/flickr8k", "CAPTIONER_OUTPUT_ROOT": "/srv/out"}
    )

    assert config.data_dir == Path("/srv/flickr8k")
    assert config.output_root == Path("/srv/out")


def test_relative_env_paths_resolve_against_the_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)

    config = load_config(
        "smoke", env={"CAPTIONER_DATA_DIR": "shared/flickr8k", "CAPTIONER_OUTPUT_ROOT": "out"}
    )

    assert config.data_dir == tmp_path / "shared" / "flickr8k"
    assert config.output_root == tmp_path / "out"


def test_process_environment_is_read_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAPTIONER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CAPTIONER_OUTPUT_ROOT", "")  # empty means unset

    config = load_config("smoke")

    assert config.data_dir == tmp_path / "data"
    assert config.output_root == REPO_ROOT / "outputs" / "smoke"


def test_profile_file_extends_smoke(tmp_path: Path) -> None:
    path = write_profile(
        tmp_path,
        "mine",
        "extends: smoke\n"
        "pipeline:\n  name: my-run\n"
        "data:\n  synthetic:\n    num_images: 12\n"
        "ingest:\n  max_skipped_fraction: 0.2\n",
    )

    config = load_config(str(path), env={})
    smoke = load_config("smoke", env={})

    assert config.profile == "mine"
    assert config.pipeline.name == "my-run"
    assert config.data.synthetic.num_images == 12
    assert config.ingest.max_skipped_fraction == 0.2
    # Everything not mentioned is inherited, including siblings in the same sections.
    assert config.pipeline.output_root == smoke.pipeline.output_root
    assert config.data.synthetic.seed == smoke.data.synthetic.seed
    assert config.data.source == smoke.data.source
    assert config.beam == smoke.beam


def test_profile_extending_itself_is_an_error(tmp_path: Path) -> None:
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text(f"extends: {b}\n")
    b.write_text(f"extends: {a}\n")

    with pytest.raises(ConfigError, match="extends itself"):
        load_config(str(a), env={})


def test_parse_override() -> None:
    assert parse_override("a.b=0.5") == ("a.b", 0.5)
    assert parse_override("data.synthetic.num_images=12") == ("data.synthetic.num_images", 12)
    assert parse_override("pipeline.enable_cache=false") == ("pipeline.enable_cache", False)
    assert parse_override("data.splits=[train, dev]") == ("data.splits", ["train", "dev"])
    assert parse_override(" pipeline.name = a=b") == ("pipeline.name", "a=b")
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_override("pipeline.name")


def test_parsed_override_feeds_load_config() -> None:
    key, value = parse_override("ingest.max_skipped_fraction=0.25")
    assert load_config("smoke", {key: value}, env={}).ingest.max_skipped_fraction == 0.25


def test_importing_configs_is_light() -> None:
    heavy = ["tensorflow", "apache_beam", "tfx", "tensorflow_data_validation", "torch", "mlflow"]
    code = (
        "import json, sys, configs\n"
        "configs.load_config('smoke', env={})\n"
        f"print(json.dumps([m for m in {heavy!r} if m in sys.modules]))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPTIONER_")}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60
    )

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def test_package_exports() -> None:
    assert configs.load_config is load_config
    assert set(configs.__all__) == {"Config", "ConfigError", "available_profiles", "load_config", "parse_override"}


def test_the_attention_model_makes_the_feature_step_keep_the_grid() -> None:
    assert not load_config("smoke", env={}).stores_grid
    assert load_config("smoke", {"features.store_grid": True}, env={}).stores_grid
    attention = load_config("smoke_attention", env={})
    assert attention.model.architecture == "attention" and attention.stores_grid
    assert not attention.features.store_grid  # the model asks for it, not the profile


def test_serving_section_has_a_pixel_budget_that_overrides_apply_to() -> None:
    assert load_config("smoke", env={}).serving.max_image_pixels == 40_000_000
    assert load_config("flickr8k", env={}).serving.max_image_pixels == 40_000_000
    assert load_config("smoke", {"serving.max_image_pixels": 1000}, env={}).serving.max_image_pixels == 1000


def test_gate_takes_a_cider_minimum_and_the_coco_caption_switch() -> None:
    config = load_config("smoke", {"gate.min_cider": 1.5, "gate.coco_caption": False}, env={})
    assert config.gate.min_cider == 1.5 and config.gate.coco_caption is False
    assert load_config("smoke", env={}).gate.coco_caption is True
    with pytest.raises(ConfigError, match="gate.min_cider must be 0 or more"):
        load_config("smoke", {"gate.min_cider": -0.1}, env={})
    with pytest.raises(ConfigError, match="gate.coco_caption"):
        load_config("smoke", {"gate.coco_caption": "yes"}, env={})


def test_a_fine_tuned_top_stores_the_map_below_it_instead_of_the_grid():
    config = load_config("flickr8k_lite0_finetune", env={})
    assert config.features.finetune_from_block == 11 and config.model.architecture == "attention"
    assert not config.stores_grid  # the map entering block 11 is stored instead


@pytest.mark.parametrize("change, message", [
    ({"features.backbone": "densenet201"}, "needs an EfficientNet-Lite backbone"),
    ({"model.architecture": "merge"}, "needs model.architecture attention"),
    ({"train.select_by": "bleu_4"}, "needs train.select_by val_loss"),
    ({"features.finetune_from_block": -1}, "must be >= 0"),
    ({"train.backbone_learning_rate": 0.0}, "backbone_learning_rate must be > 0"),
])
def test_settings_fine_tuning_cannot_honour_are_refused_by_name(change, message):
    with pytest.raises(ConfigError, match=message):
        load_config("flickr8k_lite0_finetune", change, env={})


def test_batches_by_image_are_for_a_fine_tuned_top_only():
    assert load_config("flickr8k_lite0_finetune", {"train.batch_by_image": True}, env={}).train.batch_by_image
    with pytest.raises(ConfigError, match="train.batch_by_image needs features.finetune_from_block"):
        load_config("flickr8k_lite0_scst", {"train.batch_by_image": True}, env={})


def test_a_float_written_with_an_exponent_and_no_dot_is_a_float_on_the_command_line():
    """YAML 1.1 (PyYAML) reads `5e-5` as a string; `--set scst.learning_rate=5e-5` means the number."""
    key, value = parse_override("scst.learning_rate=5e-5")
    assert value == "5e-5"  # what the YAML reader gives
    assert load_config("flickr8k_lite0_scst", {key: value}, env={}).scst.learning_rate == 5e-5
    assert load_config("smoke", {"train.learning_rate": "1E+2"}, env={}).train.learning_rate == 100.0
    with pytest.raises(ConfigError, match="must be float"):
        load_config("smoke", {"train.learning_rate": "fast"}, env={})
    with pytest.raises(ConfigError, match="must be int"):
        load_config("smoke", {"train.epochs": "5e1"}, env={})  # only float keys take it

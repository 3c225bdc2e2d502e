"""What a user of configs/config.py notices: which values each section accepts and refuses
(with the message naming the key), how overrides, the environment and `extends` combine,
how paths resolve, and the Trainer's round trip through JSON.

Values at the edge of each rule are tried on both sides, so a rule that moved by one (or
flipped) shows up. Mutation testing showed these unpinned (tools/mutation.py).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from configs.config import ConfigError, TrainerSections, available_profiles, is_uri, load_config

REPO = Path(__file__).resolve().parents[1]


def smoke(**overrides: object):
    """The smoke profile with dotted overrides (`data__synthetic__seed=3` is `data.synthetic.seed`)."""
    return load_config("smoke", {k.replace("__", "."): v for k, v in overrides.items()}, env={})


def refused(dotted: str, value: object) -> str:
    with pytest.raises(ConfigError) as error:
        load_config("smoke", {dotted: value}, env={})
    return str(error.value)


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("dotted", "accepted", "refused_value", "message"),
    [
        ("data.synthetic.num_images", 1, 0, "data.synthetic.num_images must be >= 1, got 0"),
        ("data.synthetic.min_size", 32, 31, "data.synthetic needs 32 <= min_size <= max_size, got 31, 256"),
        ("data.synthetic.max_size", 96, 95, "data.synthetic needs 32 <= min_size <= max_size, got 96, 95"),
        ("ingest.max_skipped_fraction", 0.0, -0.01, "ingest.max_skipped_fraction must be between 0 and 1"),
        ("ingest.max_skipped_fraction", 1.0, 1.01, "ingest.max_skipped_fraction must be between 0 and 1"),
        ("decode.no_repeat_ngram_size", 0, -1, "decode.no_repeat_ngram_size must be >= 0, got -1"),
        ("gate.min_bleu_4", 0.0, -0.01, "gate.min_bleu_4 must be between 0 and 1"),
        ("gate.min_bleu_4", 1.0, 1.01, "gate.min_bleu_4 must be between 0 and 1"),
        ("gate.min_bleu_1", 1.0, 1.01, "gate.min_bleu_1 must be between 0 and 1"),
        ("gate.min_bleu_1", 0.0, -0.5, "gate.min_bleu_1 must be between 0 and 1"),
        ("gate.max_bleu_4_drop", 1.0, 2.0, "gate.max_bleu_4_drop must be between 0 and 1"),
        ("gate.max_bleu_4_drop", 0.0, -0.01, "gate.max_bleu_4_drop must be between 0 and 1"),
        ("gate.min_cider", 0.0, -1e-9, "gate.min_cider must be 0 or more"),
        ("gate.batch_size", 1, 0, "gate.batch_size must be at least 1"),
        ("serving.max_image_pixels", 1, 0, "serving.max_image_pixels must be >= 1, got 0"),
        ("mlflow.gallery_size", 0, -1, "mlflow.gallery_size must be >= 0"),
    ],
)
def test_each_bound_accepts_its_edge_and_refuses_one_step_past_it(dotted, accepted, refused_value, message):
    config = load_config("smoke", {dotted: accepted}, env={})
    section, *rest = dotted.split(".")
    value = getattr(config, section)
    for name in rest:
        value = getattr(value, name)
    assert value == accepted
    assert refused(dotted, refused_value) == message


def test_min_size_equal_to_max_size_is_one_fixed_size():
    config = smoke(data__synthetic__min_size=100, data__synthetic__max_size=100)
    assert (config.data.synthetic.min_size, config.data.synthetic.max_size) == (100, 100)


@pytest.mark.parametrize(
    ("fractions", "message"),
    [
        ([0.5, 0.25, 0.125, 0.125], "data.synthetic.split_fractions must be 3 non-negative numbers, got (0.5, 0.25, 0.125, 0.125)"),
        ([1.5, -0.25, -0.25], "data.synthetic.split_fractions must be 3 non-negative numbers, got (1.5, -0.25, -0.25)"),
        ([0.5, 0.25, 0.125], "data.synthetic.split_fractions must sum to 1, got (0.5, 0.25, 0.125)"),
    ],
)
def test_split_fractions_must_be_three_non_negative_numbers_summing_to_one(fractions, message):
    # split_fractions is a 3-tuple, so a list of 4 is refused by its type first; build it directly.
    from configs.config import SyntheticConfig

    with pytest.raises(ConfigError) as error:
        SyntheticConfig(split_fractions=fractions)
    assert str(error.value) == message


def test_split_fractions_of_zero_and_integers_are_fine_and_become_a_tuple_of_floats():
    from configs.config import SyntheticConfig

    assert SyntheticConfig(split_fractions=[1, 0, 0]).split_fractions == (1.0, 0.0, 0.0)
    assert all(type(f) is float for f in SyntheticConfig(split_fractions=[1, 0, 0]).split_fractions)
    assert smoke(data__synthetic__split_fractions=[0.5, 0.5, 0]).data.synthetic.split_fractions == (0.5, 0.5, 0.0)


@pytest.mark.parametrize(
    ("dotted", "choices"),
    [
        ("data.source", ["synthetic", "flickr8k"]),
        ("beam.direct_running_mode", ["in_memory", "multi_threading", "multi_processing"]),
        ("features.backbone", ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "densenet201"]),
        ("model.architecture", ["merge", "attention"]),
        ("train.select_by", ["val_loss", "bleu_1", "bleu_2", "bleu_3", "bleu_4"]),
        ("decode.default", ["greedy", "beam_search"]),
        ("gate.signature", ["serving_default", "greedy", "beam_search"]),
    ],
)
def test_every_documented_choice_is_accepted_and_others_are_refused_listing_them(dotted, choices):
    section, key = dotted.rsplit(".", 1)
    for choice in choices:
        config = load_config("smoke", {dotted: choice, "decode.beam_width": 3}, env={})
        assert getattr(getattr(config, section), key) == choice
    assert refused(dotted, "nonsense") == f"config key {dotted!r} is 'nonsense'; choose one of {', '.join(choices)}"


def test_a_split_role_must_be_one_of_the_splits_read():
    assert refused("data.train_split", "test2") == "split 'test2' is not among data.splits ('train', 'dev', 'test')"
    config = smoke(data__splits=["a", "b"], data__train_split="a", data__eval_split="b")
    assert (config.data.train_split, config.data.eval_split) == ("a", "b")


def test_beam_search_by_default_needs_a_beam_of_two_or_more():
    assert refused_with({"decode.default": "beam_search", "decode.beam_width": 1}) == (
        "decode.default beam_search needs decode.beam_width >= 2"
    )
    assert smoke(decode__default="beam_search", decode__beam_width=2).decode.beam_width == 2
    assert smoke(decode__default="greedy", decode__beam_width=1).decode.beam_width == 1


def refused_with(overrides: dict) -> str:
    with pytest.raises(ConfigError) as error:
        load_config("smoke", overrides, env={})
    return str(error.value)


# --------------------------------------------------------------------------- types


def test_wrong_types_are_refused_naming_the_key_and_the_type():
    assert refused("train.epochs", True) == "config key 'train.epochs' must be an int, got True"
    assert refused("gate.min_cider", True) == "config key 'gate.min_cider' must be float, got True"
    assert refused("pipeline.name", 3) == "config key 'pipeline.name' must be str, got 3"
    assert refused("data.splits", "train") == "config key 'data.splits' must be a list, got 'train'"
    assert refused("data.synthetic.split_fractions", [0.5, 0.5]) == (
        "config key 'data.synthetic.split_fractions' needs 3 values, got [0.5, 0.5]"
    )
    assert refused("features.weights", 3) == "config key 'features.weights': 3 is not a str | None"


def test_optional_values_take_null_or_their_type():
    assert smoke(features__weights=None).features.weights is None
    assert smoke(features__weights="imagenet").features.weights == "imagenet"
    assert smoke(mlflow__tracking_uri="http://127.0.0.1:5000").mlflow.tracking_uri == "http://127.0.0.1:5000"
    assert smoke(train__learning_rate=1).train.learning_rate == 1.0


def test_unknown_keys_list_the_known_keys_of_their_section():
    message = refused("push.base", "x")
    assert message == "unknown config key 'push.base'; known keys here: base_dir"
    top = refused("pushh", {})
    assert top.startswith("unknown config key 'pushh'; known keys here: beam, data, decode, features, gate, ")


# --------------------------------------------------------------------------- profiles


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_profiles_are_the_yaml_files_beside_the_config_sorted():
    assert available_profiles() == sorted(p.stem for p in (REPO / "configs").glob("*.yaml"))


def test_a_yml_path_is_a_profile_and_takes_its_name_from_the_file(tmp_path):
    path = write(tmp_path / "other.yml", "extends: smoke\npipeline:\n  name: x\n")
    config = load_config(str(path), env={})
    assert (config.profile, config.pipeline.name) == ("other", "x")


def test_a_missing_profile_file_names_where_it_looked(tmp_path):
    missing = tmp_path / "gone.yaml"
    with pytest.raises(ConfigError) as error:
        load_config(str(missing), env={})
    assert str(error.value).startswith(f"no profile {str(missing)!r} (looked for {missing}); known profiles: ")
    assert "smoke" in str(error.value).split("known profiles: ")[1].split(", ")


def test_an_empty_profile_is_missing_its_required_keys_and_a_list_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"^missing config key 'pipeline'$"):
        load_config(str(write(tmp_path / "empty.yaml", "")), env={})
    listed = write(tmp_path / "list.yaml", "- a\n- b\n")
    with pytest.raises(ConfigError) as error:
        load_config(str(listed), env={})
    assert str(error.value) == f"{listed}: the top level must be a mapping"


def test_extends_chains_merge_sections_key_by_key_and_a_value_replaces_a_section(tmp_path):
    middle = write(tmp_path / "middle.yaml", "extends: smoke\ntrain:\n  epochs: 7\ngate:\n  min_bleu_4: 0.5\n")
    top = write(tmp_path / "top.yaml", f"extends: {middle}\ntrain:\n  batch_size: 8\n")
    config, base = load_config(str(top), env={}), load_config("smoke", env={})
    assert (config.train.epochs, config.train.batch_size) == (7, 8)
    assert config.train.learning_rate == base.train.learning_rate
    assert config.gate.min_bleu_4 == 0.5 and config.profile == "top"
    scalar = write(tmp_path / "scalar.yaml", "extends: smoke\ntrain: 3\n")
    with pytest.raises(ConfigError, match=r"^train must be a mapping, got 3$"):
        load_config(str(scalar), env={})


def test_a_profile_extending_itself_names_the_chain(tmp_path):
    a = tmp_path / "a.yaml"
    write(a, f"extends: {a}\n")
    with pytest.raises(ConfigError) as error:
        load_config(str(a), env={})
    assert str(error.value) == f"profile {a} extends itself through {(str(a),)}"


# --------------------------------------------------------------------------- overrides and environment


def test_the_environment_wins_over_overrides_and_keeps_uris_as_they_are():
    config = load_config(
        "smoke",
        {"data.data_dir": "/from/override", "pipeline.output_root": "/from/override"},
        env={"CAPTIONER_DATA_DIR": "gs://bucket/flickr8k", "CAPTIONER_OUTPUT_ROOT": "/srv/out"},
    )
    assert config.data.data_dir == "gs://bucket/flickr8k"
    assert config.pipeline.output_root == "/srv/out"
    only_override = load_config("smoke", {"data.data_dir": "/from/override"}, env={"CAPTIONER_DATA_DIR": ""})
    assert only_override.data_dir == Path("/from/override")


def test_an_override_below_a_value_that_is_not_a_section_is_refused():
    assert refused("data.splits.first", "x") == "cannot set 'data.splits.first': 'splits' is not a section"
    assert smoke(mlflow__experiment="e").mlflow.experiment == "e"


def test_is_uri_tells_remote_locations_from_paths():
    assert is_uri("gs://bucket/dir") and is_uri("s3://b")
    assert not is_uri("/data/flickr8k") and not is_uri("relative/dir")


# --------------------------------------------------------------------------- paths and derived values


def test_relative_paths_resolve_against_the_repo_absolute_and_home_paths_do_not():
    config = smoke(push__base_dir="serving/models/x", pipeline__output_root="~/out", data__data_dir="/abs/data")
    assert config.push_dir == REPO / "serving" / "models" / "x"
    assert config.output_root == Path.home() / "out"
    assert config.data_dir == Path("/abs/data")
    assert smoke(push__base_dir="/srv/push").push_dir == Path("/srv/push")


def test_the_tracking_uri_is_the_sqlite_store_under_the_output_root_unless_set():
    config = smoke(pipeline__output_root="/srv/run")
    assert config.mlflow_tracking_uri == "sqlite:////srv/run/mlflow.db"
    assert smoke(mlflow__tracking_uri="http://h:5000").mlflow_tracking_uri == "http://h:5000"


def test_the_flat_dict_names_every_value_by_its_dotted_key():
    config = smoke(data__synthetic__seed=5, beam__extra_args=["--x"])
    flat = config.to_flat_dict()
    assert flat["data.synthetic.seed"] == 5 and flat["beam.extra_args"] == ("--x",)
    assert flat["pipeline.output_root"] == config.pipeline.output_root
    assert not any(isinstance(v, dict) for v in flat.values())
    assert "data.synthetic" not in flat and "data" not in flat


def test_trainer_sections_travel_as_json_and_come_back_equal_with_an_absolute_weights_path():
    config = smoke(features__weights_path="weights/notop.h5", train__epochs=3)
    sections = TrainerSections.of(config)
    assert sections.features.weights_path == str(REPO / "weights" / "notop.h5")
    assert sections.train == config.train and sections.decode == config.decode
    travelled = json.loads(json.dumps(sections.to_custom_config()))
    assert TrainerSections.from_custom_config(travelled) == sections
    assert TrainerSections.of(smoke()).features.weights_path is None
    with pytest.raises(ConfigError, match=r"^missing config key 'features'$"):
        TrainerSections.from_custom_config({})


# --------------------------------------------------------------------------- frozen


def test_every_section_and_the_trainer_sections_refuse_assignment():
    """A component handed `config.gate` (or the Trainer its sections) cannot change what
    the rest of the run sees: every section is frozen, not only the top level."""
    config = smoke()
    names = [f.name for f in dataclasses.fields(config) if dataclasses.is_dataclass(getattr(config, f.name))]
    assert names == [
        "pipeline", "data", "ingest", "validation", "beam", "features", "text",
        "model", "train", "scst", "decode", "gate", "push", "serving", "mlflow",
    ]
    sections = [getattr(config, name) for name in names]
    for section in sections + [config.data.synthetic, TrainerSections.of(config)]:
        for field in dataclasses.fields(section):
            with pytest.raises(dataclasses.FrozenInstanceError):
                setattr(section, field.name, getattr(section, field.name))

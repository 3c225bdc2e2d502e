"""Names that cross artifacts: feature keys, artifact file names, metric names.

Every producer and every reader of an artifact imports its names from here (as TFX's
penguin template imports `features.LABEL_KEY`), so renaming a key is one edit and a typo
is an import error instead of a missing feature at run time. Plain strings, no imports:
any layer may use this module.
"""

from __future__ import annotations

# Raw tf.Examples of Flickr8kExampleGen, read by the FeatureExtractor, Transform and the
# evaluator: one example per image.
IMAGE_ID_KEY = "image_id"
IMAGE_ENCODED_KEY = "image/encoded"  # the image file's bytes, as ingested
CAPTIONS_KEY = "captions"  # every caption of the image
IMAGE_HEIGHT_KEY = "image/height"
IMAGE_WIDTH_KEY = "image/width"

# Added by the FeatureExtractor, read by Transform.
IMAGE_FEATURES_KEY = "image/features"  # pooled backbone features, float [D]
IMAGE_GRID_KEY = "image/grid"  # the backbone's grid, float [H * W * D] (attention only)
# The map entering the fine-tuned block, float [h * w * c] (features.finetune_from_block only).
IMAGE_MAP_KEY = "image/block_map"

# Written by Transform, read by the Trainer.
CAPTION_IDS_KEY = "caption_ids"
NUM_CAPTIONS_KEY = "num_captions"
TRANSFORMED_IMAGE_ID_KEY = "image_id"
TRANSFORMED_FEATURES_KEY = "image_features"
TRANSFORMED_GRID_KEY = "image_grid"
TRANSFORMED_MAP_KEY = "image_map"
VOCAB_NAME = "caption_vocab"  # the tft vocabulary asset of the transform graph

# Files inside artifacts: who writes them is in the comment, readers are tracking/ and tests.
INGESTION_REPORT_FILE = "ingestion_report.json"  # Flickr8kExampleGen's IngestionReport
HISTORY_FILE = "history.json"  # the Trainer's ModelRun
METRICS_FILE = "metrics.json"  # BleuEvaluator's CaptionEvaluation
PREDICTIONS_FILE = "predictions.jsonl"  # BleuEvaluator's CaptionEvaluation
EXAMPLE_IMAGE_FILE = "example.jpg"  # BleuEvaluator's CaptionEvaluation: the logged model's input example
PUSH_FILE = "push.json"  # CaptionPusher's PushedModel
MLFLOW_RUN_FILE = "mlflow_run.json"  # RunRecorder's MlflowRun
# The Trainer's facts about a model (vocabulary size, epochs, run ids), inside the serving
# SavedModel where TF Serving ignores them: <Format-Serving>/assets.extra/training.json.
TRAINING_FACTS_FILE = "assets.extra/training.json"
# CaptionPusher's record inside each pushed version: the model card (profile, scores, run ids).
PUSH_RECORD_FILE = "assets.extra/captioner_push.json"
SCHEMA_FILE = "schema.pbtxt"  # ImportSchemaGen's Schema (TFX's own name)
STATISTICS_FILE = "FeatureStats.pb"  # StatisticsGen, under Split-<name>/ (TFX's own name)

# Scores in metrics.json, the gate and MLflow.
BLEU_METRICS = ("bleu_1", "bleu_2", "bleu_3", "bleu_4")
CIDER_METRIC = "cider"
METEOR_METRIC = "meteor"

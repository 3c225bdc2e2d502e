"""MLflow tracking of pipeline runs: what a run produced (run_record), files for people
(report), the MLflow run itself (mlflow_logger), the logged pyfunc model (model), and the
run found by its TFX pipeline run id from inside the steps while they run (live).

pipelines/local_runner.py records every run after it ends, successful or not; the Trainer
logs its epochs live (components/trainer). Importing this package is light: mlflow,
TensorFlow and TFX load only inside the functions that need them.
"""

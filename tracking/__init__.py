"""MLflow tracking of pipeline runs: what a run produced (run_record), files for people
(report), the MLflow run itself (mlflow_logger) and the logged pyfunc model (model).

Called by pipelines/local_runner.py after every run, successful or not. Importing this
package is light: mlflow, TensorFlow and TFX load only inside the functions that need them.
"""

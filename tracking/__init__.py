"""MLflow tracking of pipeline runs, one module per thing recorded, each importable without
TFX: the run's life (lifecycle: found or created by the TFX run id, FINISHED or FAILED),
params, metrics and the dataset (metrics), files for people (artifacts, made by report),
the pyfunc model and the registry (model, registry); and, from ML Metadata, what a run
produced (run_record, lineage, run_summary).

The pipeline's own steps call it while they run (components/tracked.py, the Trainer, the
evaluator, the RunRecorder), so a run is recorded the same under any orchestrator.
Importing this package is light: mlflow, TensorFlow and TFX load only inside the
functions that need them.
"""

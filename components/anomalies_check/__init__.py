"""AnomaliesCheck: stops the pipeline when ExampleValidator found anomalies."""

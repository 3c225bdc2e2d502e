"""The AnomaliesCheck component: a gate after ExampleValidator (see check.py).

No `from __future__ import annotations` here: TFX reads the real annotation objects.
"""


from tfx import v1 as tfx
from tfx.types import artifact_utils

from components.anomalies_check import check


@tfx.dsl.components.component
def AnomaliesCheck(anomalies: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.ExampleAnomalies]) -> None:
    """Fails the run, naming each anomaly, when ExampleValidator found any."""
    check.raise_on_anomalies(anomalies.uri, artifact_utils.decode_split_names(anomalies.split_names))

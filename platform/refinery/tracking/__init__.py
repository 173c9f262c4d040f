"""The only code that talks to MLflow.

- client:  the client, experiment per team, metric history, artifacts
- runs:    the parent run of a pipeline Run and the nested run of each stage
- buffer:  MetricBuffer, batched and outage-tolerant metric logging

Import the submodules you need; this package imports nothing heavy on its own. MLflow is private to
the platform: no page or API response hands the browser an MLflow address (artifacts are proxied by
refinery.tracking.stage_artifacts).
"""

from refinery.tracking.buffer import MetricBuffer
from refinery.tracking.client import (
    artifact_list,
    artifacts_download,
    artifacts_upload,
    experiment_ensure,
    experiment_name,
    metric_history,
    tracking_client,
)

__all__ = [
    "MetricBuffer",
    "artifact_list",
    "artifacts_download",
    "artifacts_upload",
    "experiment_ensure",
    "experiment_name",
    "metric_history",
    "tracking_client",
]

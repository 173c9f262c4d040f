"""The only code that talks to MLflow.

- client:  the client, experiment per team, links to the UI, metric history, artifacts
- runs:    the parent run of a pipeline Run and the nested run of each stage
- buffer:  MetricBuffer, batched and outage-tolerant metric logging

Import the submodules you need; this package imports nothing heavy on its own, so the
web side can import `refinery.tracking.client.run_url` without loading MLflow.
"""
from refinery.tracking.buffer import MetricBuffer
from refinery.tracking.client import (
    artifact_list,
    artifacts_download,
    artifacts_upload,
    experiment_ensure,
    experiment_name,
    metric_history,
    run_url,
    tracking_client,
)

__all__ = [
    "MetricBuffer", "artifact_list", "artifacts_download", "artifacts_upload", "experiment_ensure",
    "experiment_name", "metric_history", "run_url", "tracking_client",
]

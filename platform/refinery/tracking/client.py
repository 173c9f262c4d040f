"""The MLflow client, experiment names and the small read/write helpers around them.

Everything here talks to the tracking server named by settings.MLFLOW_TRACKING_URI
over HTTP (artifacts go through the server's proxy, so a worker needs no shared disk).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from django.conf import settings

log = logging.getLogger(__name__)

# MLflow's own HTTP defaults retry a dead server for minutes (7 retries, backoff 2,
# timeout 120 s), which would freeze a page or a supervisor thread. Refinery retries
# on its own terms (see MetricBuffer), so the client fails fast unless an operator
# says otherwise in the environment. Closing a run would also print its URL to stdout
# (after one more get_run request), and download progress bars would fill the worker log.
_CLIENT_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",  # a worker log is no terminal
}
for _name, _value in _CLIENT_DEFAULTS.items():
    os.environ.setdefault(_name, _value)


def tracking_client(tracking_uri: str | None = None):
    """A client for the platform's tracking server (or `tracking_uri`)."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri or settings.MLFLOW_TRACKING_URI)


def experiment_name(*, team) -> str:
    return f"{settings.MLFLOW_EXPERIMENT_PREFIX}/{team.slug}"


def experiment_ensure(*, team, client=None) -> str:
    """The id of the team's experiment, created on first use (safe against a concurrent creator)."""
    from mlflow.exceptions import MlflowException

    client = client or tracking_client()
    name = experiment_name(team=team)
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment.experiment_id)
        return experiment.experiment_id
    try:
        return client.create_experiment(name, tags={"refinery.team": team.slug})
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        return client.get_experiment_by_name(name).experiment_id  # another worker won the race


def metric_history(run_id: str, key: str, *, client=None) -> list[tuple[int, float]]:
    """All points of one metric of one run, as (step, value) sorted by step then time."""
    client = client or tracking_client()
    points = client.get_metric_history(run_id, key)
    return [(m.step, m.value) for m in sorted(points, key=lambda m: (m.step, m.timestamp))]


def artifacts_upload(
    *, mlflow_run_id: str, local_path: str | os.PathLike, artifact_path: str | None = None, client=None
) -> None:
    """Upload a file or a directory's content to a run (under `artifact_path`)."""
    client = client or tracking_client()
    local_path = Path(local_path)
    if local_path.is_dir():
        client.log_artifacts(mlflow_run_id, str(local_path), artifact_path)
    else:
        client.log_artifact(mlflow_run_id, str(local_path), artifact_path)


def artifacts_download(*, mlflow_run_id: str, artifact_path: str, dst: str | os.PathLike, client=None) -> Path:
    """Download a run's artifact (file or directory) into `dst`; return the local path.

    A finished download is marked with `.refinery-complete` so that a retried stage on the
    same host does not fetch it again; a partial one is fetched again.
    """
    dst = Path(dst)
    marker = dst / ".refinery-complete"
    local = dst / artifact_path
    if marker.exists() and local.exists():
        return local
    dst.mkdir(parents=True, exist_ok=True)
    client = client or tracking_client()
    path = Path(client.download_artifacts(mlflow_run_id, artifact_path, str(dst)))
    marker.write_text(f"{mlflow_run_id}/{artifact_path}\n")
    return path


def artifact_list(*, mlflow_run_id: str, path: str | None = None, client=None) -> list[str]:
    client = client or tracking_client()
    return [f.path for f in client.list_artifacts(mlflow_run_id, path)]

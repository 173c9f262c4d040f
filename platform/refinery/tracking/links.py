"""Links to MLflow for the UI. MLflow itself stays private; MLFLOW_UI_URL is what users can open."""
from __future__ import annotations

from refinery.tracking.client import run_url


def mlflow_run_url(experiment_id: str, run_id: str) -> str | None:
    """The pages' spelling of refinery.tracking.client.run_url (note: experiment first)."""
    return run_url(run_id, experiment_id)

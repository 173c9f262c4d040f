"""Links to MLflow for the UI. MLflow itself stays private; MLFLOW_UI_URL is what users can open."""
from __future__ import annotations

from django.conf import settings


def mlflow_run_url(experiment_id: str, run_id: str) -> str | None:
    base = (settings.MLFLOW_UI_URL or "").rstrip("/")
    if not base or not experiment_id or not run_id:
        return None
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"

"""MLflow runs for Refinery runs: one parent run per pipeline Run, one nested run per stage.

Layout in MLflow:
    experiment  {MLFLOW_EXPERIMENT_PREFIX}/{team.slug}
      run       "#<number> <name>"           the pipeline Run (parent)
        run     "<stage name>"               one per StageRun (tag mlflow.parentRunId)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from django.utils import timezone

from refinery.runs.models import TERMINAL_STATES, Run, StageRun, Status
from refinery.runs.services import run_mlflow_ids_set, stage_update
from refinery.tracking.client import experiment_ensure, tracking_client

log = logging.getLogger(__name__)

MAX_PARAM_VALUE = 6000
MAX_TAG_VALUE = 5000
MAX_PER_BATCH = 100  # params or tags per log_batch call

# Refinery status -> MLflow RunStatus name
MLFLOW_STATUS = {
    Status.SUCCEEDED: "FINISHED",
    Status.FAILED: "FAILED",
    Status.CANCELED: "KILLED",
}


def flatten(data: Mapping[str, Any] | None, prefix: str = "") -> dict[str, str]:
    """{"config": {"lr": 0.1}, "adapter": None} -> {"config.lr": "0.1", "adapter": "None"}."""
    out: dict[str, str] = {}
    for key, value in (data or {}).items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, prefix=f"{name}."))
        elif isinstance(value, (list, tuple)):
            out[name] = ",".join(str(v) for v in value)
        else:
            out[name] = str(value)
    return out


def _user_name(run: Run) -> str:
    return run.created_by.get_username() if run.created_by_id else ""


def _datasets(run: Run) -> list[str]:
    shas = []
    for stage in run.snapshot.get("stages", []):
        for key in ("train_data", "eval_data"):
            sha = (stage.get(key) or {}).get("sha256")
            if sha and sha not in shas:
                shas.append(sha)
    return shas


def run_tags(run: Run) -> dict[str, str]:
    """Tags shared by the parent run and every stage run of a pipeline Run."""
    base = run.snapshot.get("base_model") or {}
    tags = {
        "refinery.team": run.team.slug,
        "refinery.user": _user_name(run),
        "refinery.run_id": str(run.pk),
        "refinery.run_number": str(run.number),
        "refinery.pipeline": (run.snapshot.get("pipeline") or {}).get("name", ""),
        "refinery.base_model": base.get("name_or_path", ""),
        "refinery.base_model.revision": base.get("revision") or "",
        "refinery.code_version": run.code_version,
        "refinery.datasets": ",".join(_datasets(run)),
        "mlflow.user": _user_name(run),
        "mlflow.source.name": "refinery",
        "mlflow.source.type": "JOB",
    }
    return {k: v[:MAX_TAG_VALUE] for k, v in tags.items() if v}


def _log_params_and_tags(client, mlflow_run_id: str, params: Mapping[str, str], tags: Mapping[str, str]) -> None:
    from mlflow.entities import Param, RunTag

    param_list = [Param(k, str(v)[:MAX_PARAM_VALUE]) for k, v in params.items()]
    tag_list = [RunTag(k, str(v)[:MAX_TAG_VALUE]) for k, v in tags.items()]
    for i in range(0, max(len(param_list), len(tag_list)), MAX_PER_BATCH):
        client.log_batch(
            mlflow_run_id,
            params=param_list[i : i + MAX_PER_BATCH],
            tags=tag_list[i : i + MAX_PER_BATCH],
            synchronous=True,
        )


def pipeline_run_ensure(*, run: Run, client=None) -> tuple[str, str]:
    """The (experiment id, MLflow run id) of a Run's parent run, created on the first call.

    Race-free without holding a row lock across network calls: every caller that finds
    no id creates a run, and a conditional UPDATE lets exactly one of them store its id;
    the losers delete their run and use the winner's.
    """
    run.refresh_from_db(fields=["mlflow_run_id", "mlflow_experiment_id"])
    if run.mlflow_run_id:
        return run.mlflow_experiment_id, run.mlflow_run_id
    client = client or tracking_client()
    experiment_id = experiment_ensure(team=run.team, client=client)
    created = client.create_run(experiment_id, run_name=f"#{run.number} {run.name}"[:250], tags=run_tags(run))
    mlflow_run_id = created.info.run_id
    if not run_mlflow_ids_set(run_id=run.pk, experiment_id=experiment_id, mlflow_run_id=mlflow_run_id):
        try:
            client.delete_run(mlflow_run_id)
        except Exception:  # noqa: BLE001 - a stray empty run is harmless
            log.warning("could not delete duplicate parent run %s", mlflow_run_id)
        run.refresh_from_db(fields=["mlflow_run_id", "mlflow_experiment_id"])
        return run.mlflow_experiment_id, run.mlflow_run_id
    snapshot = run.snapshot
    params = {
        "pipeline": (snapshot.get("pipeline") or {}).get("name", ""),
        "seed": run.seed,
        "code_version": run.code_version,
        "stages": ",".join(s.get("name", "") for s in snapshot.get("stages", [])),
        **flatten(snapshot.get("base_model"), prefix="base_model."),
    }
    _log_params_and_tags(client, mlflow_run_id, params, {})
    run.mlflow_run_id, run.mlflow_experiment_id = mlflow_run_id, experiment_id
    return experiment_id, mlflow_run_id


def stage_run_ensure(
    *, stage: StageRun, params: Mapping[str, Any], tags: Mapping[str, str] | None = None, client=None
) -> str:
    """The MLflow run of a stage, nested under its pipeline run; created on the first attempt.

    A retried attempt reuses the stage's run (it goes back to RUNNING), so the metric
    history of a resumed stage stays in one place.
    """
    from mlflow.entities import RunStatus

    client = client or tracking_client()
    run = stage.run
    experiment_id, parent_id = pipeline_run_ensure(run=run, client=client)
    all_tags = {
        **run_tags(run),
        "mlflow.parentRunId": parent_id,
        "refinery.stage": stage.name,
        "refinery.stage_index": str(stage.index),
        "refinery.stage_run_id": str(stage.pk),
        "refinery.method": stage.method,
        "refinery.attempt": str(stage.attempt),
        **(tags or {}),
    }
    all_tags = {k: str(v)[:MAX_TAG_VALUE] for k, v in all_tags.items() if v not in (None, "")}
    flat = {k: str(v) for k, v in params.items()}
    if stage.mlflow_run_id:
        mlflow_run_id = stage.mlflow_run_id
        client.update_run(mlflow_run_id, status=RunStatus.to_string(RunStatus.RUNNING))
        # Params are write-once in MLflow; a retry logs the same values again, which is allowed.
        _log_params_and_tags(client, mlflow_run_id, flat, all_tags)
        return mlflow_run_id
    created = client.create_run(experiment_id, run_name=stage.name, tags=all_tags)
    mlflow_run_id = created.info.run_id
    _log_params_and_tags(client, mlflow_run_id, flat, {})
    stage_update(stage_run_id=stage.pk, mlflow_run_id=mlflow_run_id)
    stage.mlflow_run_id = mlflow_run_id
    return mlflow_run_id


def mlflow_run_end(*, mlflow_run_id: str, status: str, client=None) -> None:
    """Close an MLflow run with the MLflow status matching a Refinery terminal status."""
    client = client or tracking_client()
    client.set_terminated(mlflow_run_id, status=MLFLOW_STATUS.get(status, "FAILED"))


def pipeline_run_end(*, run: Run, client=None) -> bool:
    """Close the parent run once the pipeline Run is over. True if it was closed now."""
    run.refresh_from_db(fields=["status", "mlflow_run_id"])
    if not run.mlflow_run_id or not run.is_finished:
        return False
    mlflow_run_end(mlflow_run_id=run.mlflow_run_id, status=run.status, client=client)
    Run.objects.filter(pk=run.pk).update(mlflow_ended_at=timezone.now())
    return True


def pipeline_runs_end_pending(*, client=None, limit: int = 20) -> list[int]:
    """Close the MLflow parent runs of finished runs that no supervisor closed: a run canceled (or
    failed) between stages has no stage left to do it. Called by the reaper; MLflow down: try later."""
    pending = list(
        Run.objects.filter(status__in=TERMINAL_STATES, mlflow_ended_at__isnull=True)
        .exclude(mlflow_run_id="")
        .order_by("finished_at")[:limit]
    )
    closed = []
    for run in pending:
        try:
            if pipeline_run_end(run=run, client=client):
                closed.append(run.pk)
        except Exception as exc:  # noqa: BLE001 - MLflow away: the next reaper pass tries again
            log.warning("could not close the MLflow run of run %s: %s", run.pk, exc)
            break
    return closed


def runs_for_stage(*, stage: StageRun, client=None) -> list:
    """Every MLflow run tagged with this stage run (there should be exactly one)."""
    client = client or tracking_client()
    run = stage.run
    if not run.mlflow_experiment_id:
        return []
    return client.search_runs([run.mlflow_experiment_id], filter_string=f"tags.`refinery.stage_run_id` = '{stage.pk}'")


__all__ = [
    "flatten",
    "run_tags",
    "pipeline_run_ensure",
    "stage_run_ensure",
    "mlflow_run_end",
    "pipeline_run_end",
    "runs_for_stage",
    "MLFLOW_STATUS",
    "pipeline_runs_end_pending",
]


def run_tags_set(*, mlflow_run_id: str, tags: Mapping[str, object], client=None) -> None:
    """Set tags on an MLflow run (a gate's decision on its stage's run and on the pipeline run)."""
    client = client or tracking_client()
    _log_params_and_tags(client, mlflow_run_id, {}, {k: str(v) for k, v in tags.items() if v not in (None, "")})

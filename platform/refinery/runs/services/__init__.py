"""Writes of the runs app, one module per concern: lifecycle (start, re-run, cancel a run), execution (what
the supervisor in jobs/ calls: claim, heartbeat, finish, requeue, reap), listing (the summary table the runs
list sorts by), annotations (notes and tags), dispatch (wake-ups to the workers)."""

from refinery.runs.services.execution import (
    run_mlflow_ids_set,
    stage_claim,
    stage_finish,
    stage_heartbeat,
    stage_metrics_record,
    stage_reap_expired,
    stage_redispatch_stale,
    stage_requeue,
    stage_update,
)
from refinery.runs.services.lifecycle import RunError, run_cancel, run_create, run_rerun, run_snapshot

__all__ = [
    "RunError",
    "run_create",
    "run_rerun",
    "run_cancel",
    "run_snapshot",
    "stage_claim",
    "stage_heartbeat",
    "stage_update",
    "stage_metrics_record",
    "stage_finish",
    "stage_requeue",
    "stage_reap_expired",
    "stage_redispatch_stale",
    "run_mlflow_ids_set",
]

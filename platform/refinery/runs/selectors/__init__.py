"""Reads of the runs app, one module per concern: lifecycle (a run, its stages and metrics), listing (the
runs list), compare (runs side by side), series (metric series thinned for charts)."""

from refinery.runs.selectors.execution import run_stage_named, stage_cancel_requested, stage_metric_last_steps
from refinery.runs.selectors.lifecycle import (
    run_get,
    run_learning_forgetting,
    run_list,
    run_metric_series,
    run_metric_table,
    stage_metric_summary,
)

__all__ = [
    "run_get",
    "run_learning_forgetting",
    "run_list",
    "run_metric_series",
    "run_metric_table",
    "run_stage_named",
    "stage_cancel_requested",
    "stage_metric_last_steps",
    "stage_metric_summary",
]

"""Reads for the execution side (the supervisor in jobs/, by id: a worker acts for no team)."""

from __future__ import annotations

from django.db.models import Max

from refinery.runs.models import StageMetric, StageRun


def stage_cancel_requested(*, stage_run_id: int) -> bool:
    return StageRun.objects.filter(pk=stage_run_id, cancel_requested_at__isnull=False).exists()


def stage_metric_last_steps(*, stage_run_id: int) -> dict[str, int]:
    """Per metric key, the highest step recorded for a stage (what a resumed attempt must not repeat)."""
    rows = StageMetric.objects.filter(stage_run_id=stage_run_id).values("key").annotate(last=Max("step"))
    return {row["key"]: row["last"] for row in rows}


def run_stage_named(*, run_id: int, name: str) -> StageRun | None:
    """A stage of a run by its name (a later stage's `input`)."""
    return StageRun.objects.filter(run_id=run_id, name=name).first()

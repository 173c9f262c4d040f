"""The write side of the runs list: RunMetric, the denormalized table of each run's final numbers that the list
sorts and filters by, rewritten from the stages' summaries when a stage finishes."""

from __future__ import annotations

from django.db import transaction
from django.db.models import Prefetch

from refinery.runs.models import Run, RunMetric, StageRun
from refinery.runs.selectors.summaries import run_summary_metrics


@transaction.atomic
def run_summary_refresh(*, run_id: int) -> dict[str, float]:
    """Rewrite a run's RunMetric rows from its stages' summaries (the numbers sweeps rank by, "<stage>/<key>").
    Called when a stage finishes; safe to call again at any time."""
    stages = StageRun.objects.only("id", "run_id", "index", "name", "summary").order_by("index")
    run = Run.objects.only("id", "team_id").prefetch_related(Prefetch("stages", queryset=stages)).get(pk=run_id)
    values = {key[:200]: value for key, value in run_summary_metrics(run).items()}
    RunMetric.objects.filter(run_id=run_id).exclude(key__in=list(values)).delete()
    RunMetric.objects.bulk_create(
        [RunMetric(team_id=run.team_id, run_id=run_id, key=key, value=value) for key, value in values.items()],
        update_conflicts=True,
        unique_fields=["run", "key"],
        update_fields=["value"],
    )
    return values

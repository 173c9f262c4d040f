from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.db.models import Count, Prefetch, Q, QuerySet

from refinery.runs.models import ACTIVE_STATES, Run, StageRun, Status
from refinery.runs.selectors.summaries import default_goal, run_summary_metrics
from refinery.sweeps.models import Sweep, SweepTrial
from refinery.sweeps.parameters import value_label
from refinery.teams.models import Team


def sweep_list(*, team: Team) -> QuerySet[Sweep]:
    """The team's sweeps with their number of trials and how many of those runs are active, succeeded, failed."""
    return (
        Sweep.objects.filter(team=team)
        .select_related("pipeline", "pipeline_version", "created_by")
        .annotate(
            trial_count=Count("trials"),
            active_count=Count("trials", filter=Q(trials__run__status__in=ACTIVE_STATES)),
            succeeded_count=Count("trials", filter=Q(trials__run__status=Status.SUCCEEDED)),
            failed_count=Count("trials", filter=Q(trials__run__status=Status.FAILED)),
        )
    )


def sweep_status(*, total: int, active: int, succeeded: int) -> str:
    """One status for a sweep from its runs': running while any is active, then succeeded (all did), failed
    (none did) or finished (some did)."""
    if active:
        return Status.RUNNING
    if succeeded == total:
        return Status.SUCCEEDED
    return Status.FAILED if not succeeded else "finished"


def sweep_get(*, team: Team, pk: int) -> Sweep:
    return Sweep.objects.select_related("pipeline", "pipeline_version", "created_by").get(team=team, pk=pk)


def sweep_trials(*, sweep: Sweep) -> list[SweepTrial]:
    """The sweep's trials in order, each with its run and the run's stages (for their summaries): three
    queries, however many trials."""
    stages = StageRun.objects.only("id", "run_id", "index", "name", "method", "status", "summary").order_by("index")
    return list(
        SweepTrial.objects.filter(sweep=sweep, run__team_id=sweep.team_id)
        .select_related("run")
        .defer("run__snapshot")
        .prefetch_related(Prefetch("run__stages", queryset=stages))
        .order_by("index")
    )


@dataclass
class TrialResult:
    trial: SweepTrial
    run: Run
    params: list[tuple[str, Any]]  # (path, value) in the sweep's parameter order
    value: float | None
    rank: int | None = None  # 1 = best
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def best(self) -> bool:
        return self.rank == 1

    @property
    def cells(self) -> list[dict[str, str]]:
        """Each parameter as {"path", "field", "label"} for tables and badges."""
        return [{"path": p, "field": p.rsplit(".", 1)[-1], "label": value_label(v)} for p, v in self.params]


@dataclass
class SweepResults:
    metric: str
    goal: str
    rows: list[TrialResult]  # best first; runs without the metric last, by trial number
    metrics: list[str]  # every metric some trial has, the chosen one included
    counts: dict[str, int]  # runs per status

    @property
    def active(self) -> bool:
        return any(r.run.status in ACTIVE_STATES for r in self.rows)

    @property
    def best(self) -> TrialResult | None:
        return self.rows[0] if self.rows and self.rows[0].rank == 1 else None

    @property
    def finished(self) -> int:
        return sum(1 for r in self.rows if r.run.is_finished)

    @property
    def progress(self) -> float:
        return self.finished / len(self.rows) if self.rows else 0.0

    @property
    def missing(self) -> int:
        return sum(1 for r in self.rows if r.value is None)


def sweep_results(*, sweep: Sweep, metric: str | None = None, goal: str | None = None) -> SweepResults:
    """The sweep's trials ranked by `metric` (the sweep's own by default) towards `goal` ("min" or "max";
    the sweep's goal for its own metric, else guessed from the metric's name)."""
    metric = metric or sweep.metric
    if goal not in Sweep.Goal.values:
        goal = sweep.goal if metric == sweep.metric else default_goal(metric)
    rows, keys, counts = [], set(), {}
    for trial in sweep_trials(sweep=sweep):
        metrics = run_summary_metrics(trial.run)
        keys.update(metrics)
        counts[trial.run.status] = counts.get(trial.run.status, 0) + 1
        rows.append(
            TrialResult(
                trial=trial,
                run=trial.run,
                params=[(p, trial.params.get(p)) for p in sweep.paths],
                value=metrics.get(metric),
                metrics=metrics,
            )
        )
    sign = 1 if goal == "min" else -1
    rows.sort(key=lambda r: (r.value is None, sign * r.value if r.value is not None else 0, r.trial.index))
    for rank, row in enumerate((r for r in rows if r.value is not None), 1):
        row.rank = rank
    return SweepResults(metric=metric, goal=goal, rows=rows, metrics=sorted(keys | {metric}), counts=counts)


def metric_suggestions(*, version) -> tuple[list[str], str, str]:
    """(metrics a sweep of this pipeline version can rank by, the default one, its goal): a training stage's
    train/loss (and eval/loss with held-out data), an evaluate stage's gain on held-out data and forgetting
    on the retention set. The default is the first evaluation's gain, else the last training stage's loss."""
    from trainers.catalog import METHODS

    from refinery.pipelines.specs import auto_evaluate_stages

    stages = list(version.spec.get("stages") or [])
    try:
        stages += auto_evaluate_stages(version.spec)
    except Exception:  # noqa: BLE001 - an old version may no longer validate; suggest from its own stages
        pass
    retention = bool(version.spec.get("retention_dataset_id"))
    suggestions, gains, losses = [], [], []
    for stage in stages:
        name, method = stage.get("name"), METHODS.get(stage.get("method", ""))
        if not name or method is None:
            continue
        if method.name == "evaluate":
            if stage.get("dataset_id"):
                gains.append(f"{name}/gain")
                suggestions += [f"{name}/gain", f"{name}/eval/loss"]
            if retention:
                suggestions.append(f"{name}/forgetting")
        elif method.trains:
            losses.append(f"{name}/train/loss")
            suggestions.append(f"{name}/train/loss")
            if stage.get("eval_dataset_id") or (stage.get("config") or {}).get("eval_fraction"):
                suggestions.append(f"{name}/eval/loss")
    if gains:
        return suggestions, gains[0], Sweep.Goal.MAX
    if losses:
        return suggestions, losses[-1], Sweep.Goal.MIN
    return suggestions, suggestions[0] if suggestions else "", Sweep.Goal.MIN

"""Reads of a run for the team that owns it: the runs, one run with its stages, its metrics, learning vs forgetting."""

from __future__ import annotations

from django.db.models import Count, Min, OuterRef, Prefetch, QuerySet, Subquery
from django.db.models import Max as MaxAgg

from refinery.runs.models import Run, StageMetric, StageRun
from refinery.teams.models import Team


def run_list(*, team: Team, status: str | None = None, key_metric: str | None = None) -> QuerySet[Run]:
    """The team's runs, stages prefetched; with `key_metric`, each run is annotated with that
    metric's last value (`run.key_metric`: the last stage that logged it, its last step)."""
    qs = Run.objects.filter(team=team).select_related("pipeline", "created_by")
    if status:
        qs = qs.filter(status=status)
    if key_metric:
        last = (
            StageMetric.objects.filter(stage_run__run=OuterRef("pk"), key=key_metric)
            .order_by("-stage_run__index", "-step")
            .values("value")[:1]
        )
        qs = qs.annotate(key_metric=Subquery(last))
    return qs.prefetch_related(Prefetch("stages", queryset=StageRun.objects.order_by("index")))


def run_get(*, team: Team, number: int) -> Run:
    return run_list(team=team).get(number=number)


def run_metric_table(*, run: Run) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """Every metric of a run as {key: {stage name: [(step, value)]}}, steps offset so that
    stages follow each other on one axis (stage 2 starts where stage 1 ended)."""
    stages = list(run.stages.order_by("index"))
    points: dict[int, dict[str, list[tuple[int, float]]]] = {s.pk: {} for s in stages}
    rows = StageMetric.objects.filter(stage_run__run=run).order_by("key", "step")
    for stage_id, key, step, value in rows.values_list("stage_run_id", "key", "step", "value"):
        points[stage_id].setdefault(key, []).append((step, value))
    table: dict[str, dict[str, list[tuple[int, float]]]] = {}
    offset = 0
    for stage in stages:
        last = offset
        for key, series in points[stage.pk].items():
            table.setdefault(key, {})[stage.name] = [(offset + step, value) for step, value in series]
            last = max(last, offset + series[-1][0])
        offset = max(last, offset + stage.total_steps)
    return table


def run_metric_series(*, run: Run, keys: list[str] | None = None) -> dict[str, list[tuple[int, float]]]:
    """One series per stage and key ("sft-full train/loss"), on the run's shared step axis."""
    out: dict[str, list[tuple[int, float]]] = {}
    for key, by_stage in run_metric_table(run=run).items():
        if keys is None or key in keys:
            for stage_name, series in by_stage.items():
                out[f"{stage_name} {key}"] = series
    return out


def stage_metric_summary(*, stage_run: StageRun) -> dict[str, dict[str, float | int | None]]:
    """Per metric key: first, last, min, max value and the number of points."""
    summary: dict[str, dict[str, float | int | None]] = {}
    rows = (
        StageMetric.objects.filter(stage_run=stage_run)
        .values("key")
        .annotate(
            count=Count("id"), min=Min("value"), max=MaxAgg("value"), last_step=MaxAgg("step"), first_step=Min("step")
        )
    )
    for row in rows:
        points = StageMetric.objects.filter(stage_run=stage_run, key=row["key"])
        summary[row["key"]] = {
            "count": row["count"],
            "min": row["min"],
            "max": row["max"],
            "last_step": row["last_step"],
            "first": points.filter(step=row["first_step"]).values_list("value", flat=True).first(),
            "last": points.filter(step=row["last_step"]).values_list("value", flat=True).first(),
        }
    return summary


def run_learning_forgetting(*, team: Team, limit: int = 2000) -> list[dict]:
    """One point per run with a finished evaluation that has both a target and a retention result: the gain
    on its held-out set and what it forgot on the retention set (the run's last such evaluate stage).
    Two queries, whatever the number of runs."""
    stages = (
        StageRun.objects.filter(run__team=team, method="evaluate", status="succeeded")
        .select_related("run", "run__pipeline")
        .order_by("-run__number", "-index")[: limit * 4]
    )
    points, seen = [], set()
    for stage in stages:
        summary = stage.summary or {}
        target, retention = summary.get("target"), summary.get("retention")
        if stage.run_id in seen or not target or not retention:
            continue
        if not isinstance(target.get("gain"), (int, float)) or not isinstance(
            retention.get("forgetting"), (int, float)
        ):
            continue
        seen.add(stage.run_id)
        points.append(
            {
                "run": stage.run,
                "stage": stage.name,
                "gain": float(target["gain"]),
                "forgetting": float(retention["forgetting"]),
                "target": target,
                "retention": retention,
                "pipeline": stage.run.pipeline.name if stage.run.pipeline else "(deleted pipeline)",
            }
        )
        if len(points) >= limit:
            break
    return points

"""A run's pages: the run page (live while it runs), its metrics as JSON, its artifacts, cancel and re-run; and
the team-wide learning vs forgetting plot."""

from __future__ import annotations

import json
from datetime import timedelta

from django.contrib import messages
from django.http import Http404, HttpResponse, HttpResponseBadRequest, JsonResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.http import content_disposition_header
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseStopPolling

from refinery.basemodels.selectors import base_model_exists
from refinery.core.auth import team_required
from refinery.core.templatetags.refinery import duration
from refinery.data.selectors import dataset_versions_present
from refinery.pipelines.graph import pipeline_graph
from refinery.pipelines.specs import stage_dependencies
from refinery.registry.selectors import run_gate_decisions
from refinery.runs.charts import LOSS_KEYS, ONE_OFF_METHODS, chart_payload, metric_charts, scatter_layout
from refinery.runs.models import IllegalTransition, Run, Status
from refinery.runs.selectors.lifecycle import run_get, run_learning_forgetting
from refinery.runs.selectors.series import run_metric_table_sampled
from refinery.runs.services.lifecycle import RunError, run_cancel, run_rerun
from refinery.tracking.stage_artifacts import (
    ArtifactNotFound,
    ArtifactPathError,
    ArtifactUnavailable,
    stage_artifact_listing,
    stage_artifact_open,
)


def _run_or_404(request, number: int) -> Run:
    try:
        return run_get(team=request.team, number=number)
    except Run.DoesNotExist:
        raise Http404("no such run in this team") from None


def _evaluation(stage) -> dict:
    """An evaluate stage's results for the run page: headline numbers, a metric table, sample generations."""
    summary = stage.summary or {}
    flat = summary.get("metrics") or {}
    rows = []
    for key, value in sorted(flat.items()):
        for prefix, baseline_prefix in (("eval/", "baseline/"), ("retention/", "retention_baseline/")):
            if key.startswith(prefix) and isinstance(value, (int, float)):
                rows.append((key, value, flat.get(baseline_prefix + key[len(prefix) :])))
    baseline = (stage.spec.get("config") or {}).get("baseline_stage") or "the base model"
    return {
        "stage": stage,
        "target": summary.get("target"),
        "retention": summary.get("retention"),
        "metrics": rows,
        "samples": summary.get("samples") or [],
        "baseline": baseline,
    }


def run_gate_cards(*, run: Run, stages) -> list[dict]:
    """Each gate stage of the run with its decision (one query for all of them) and, while it runs, its
    settings: what the candidate must do to replace the holder."""
    gate_stages = [s for s in stages if s.method == "gate"]
    if not gate_stages:
        return []
    decisions = run_gate_decisions(run=run)
    cards = []
    for stage in gate_stages:
        decision = decisions.get(stage.pk)
        summary = stage.summary or {}
        cards.append(
            {
                "stage": stage,
                "config": stage.spec.get("config") or {},
                "decision": decision,
                "numbers": decision.numbers if decision else summary.get("gate"),
                "samples": summary.get("samples") or [],
            }
        )
    return cards


def _export(stage) -> dict:
    summary = stage.summary or {}
    saved = None
    if summary.get("size_bytes") and summary.get("quantized_size_bytes"):
        saved = 100.0 * (1 - summary["quantized_size_bytes"] / summary["size_bytes"])
    return {"stage": stage, "summary": summary if summary.get("size_bytes") else None, "saved": saved}


def _timeline(stages, now) -> dict | None:
    """The stage timeline: one bar per stage over the run's wall time (queued, then running), so that
    parallel branches show side by side. Positions in percent of the span from the first queue to the
    last finish (or now)."""
    starts = [t for s in stages for t in (s.queued_at, s.started_at) if t]
    if not starts:
        return None
    t0 = min(starts)
    ends = [s.finished_at or now for s in stages if s.started_at or s.queued_at]
    t1 = max(ends + starts)
    total = max((t1 - t0).total_seconds(), 1.0)

    def pct(t) -> float:
        return round(100.0 * (t - t0).total_seconds() / total, 2)

    def bar(a, b) -> dict:
        left = pct(a)
        return {"left": left, "width": max(round(pct(b) - left, 2), 0.4)}

    rows = []
    for s in stages:
        row = {"stage": s, "queued": None, "running": None, "note": ""}
        if s.queued_at and (s.started_at or not s.is_finished):
            row["queued"] = bar(s.queued_at, s.started_at or now)
            row["queued"]["seconds"] = ((s.started_at or now) - s.queued_at).total_seconds()
        if s.started_at:
            row["running"] = bar(s.started_at, s.finished_at or now)
        elif s.is_finished:
            row["note"] = "not run"
        elif not s.queued_at:
            row["note"] = "waiting for " + (", ".join(stage_dependencies(s.spec)) or "its inputs")
        rows.append(row)
    ticks = [
        {"left": p, "label": "+" + duration(timedelta(seconds=total * p / 100)) if p else "start"}
        for p in (0, 25, 50, 75, 100)
    ]
    return {"rows": rows, "ticks": ticks, "start": t0, "end": t1, "live": any(not s.is_finished for s in stages)}


def _lineage(request, run: Run, stages) -> dict:
    """What the run was built from: dataset versions (with hashes and the stages that read them), the base
    model and revision, each stage's parents, code and pipeline versions. Two queries, whatever the size."""
    snapshot = run.snapshot or {}
    datasets: dict[int, dict] = {}
    roles = (("train", "train_data"), ("eval", "eval_data"), ("retention", "retention_data"))
    for spec in snapshot.get("stages", []):
        for role, key in roles:
            ref = spec.get(key)
            if ref and ref.get("version_id"):
                entry = datasets.setdefault(ref["version_id"], {**ref, "uses": []})
                label = "evaluated on" if role == "train" and spec.get("method") == "evaluate" else role
                entry["uses"].append((spec.get("name", ""), label))
    top = snapshot.get("retention_data")
    if top and top.get("version_id") and top["version_id"] not in datasets:
        datasets[top["version_id"]] = {**top, "uses": [("", "retention")]}
    present = dataset_versions_present(team=request.team, version_ids=list(datasets))
    for version_id, entry in datasets.items():
        entry["present"] = version_id in present
    base = snapshot.get("base_model") or {}
    base_present = bool(base.get("id")) and base_model_exists(team=request.team, pk=base["id"])
    parents = [{"stage": s, "needs": stage_dependencies(s.spec)} for s in stages]
    return {
        "datasets": list(datasets.values()),
        "base": base,
        "base_present": base_present,
        "parents": parents,
        "pipeline": snapshot.get("pipeline") or {},
        "overrides": snapshot.get("overrides") or {},
    }


def _config(stages) -> list[dict]:
    """Each stage's frozen settings, pretty: method, adapter, config, and the rest of its spec (inputs,
    attempts...); dataset references are in the lineage card."""
    skip = {"name", "method", "config", "adapter", "train_data", "eval_data", "retention_data"}
    out = []
    for s in stages:
        spec = s.spec or {}
        adapter = spec.get("adapter") or None
        if adapter and adapter.get("type") == "none":  # full fine-tuning: the other fields do not apply
            adapter = {"type": "none"}
        rest = {k: v for k, v in spec.items() if k not in skip}
        out.append(
            {
                "stage": s,
                "adapter": adapter,
                "config": json.dumps(spec.get("config") or {}, indent=2, sort_keys=True),
                "adapter_json": json.dumps(adapter, indent=2, sort_keys=True) if adapter else "",
                "rest": json.dumps(rest, indent=2, sort_keys=True) if rest else "",
            }
        )
    return out


def _run_context(request, run: Run) -> dict:
    """Everything the run page shows. Query count does not depend on the number of stages or metric
    points: the run, its stages (prefetched by run_get), one metric query for the stages not cached
    (refinery.runs.selectors.series: why the DB mirror and not MLflow), and two lineage lookups."""
    stages = list(run.stages.all())  # prefetched in index order by run_get
    progress = sum(s.progress for s in stages) / len(stages) if stages else 0
    current = next((s for s in stages if s.status in (Status.RUNNING, Status.CANCELING)), None)
    table = run_metric_table_sampled(run=run, stages=stages)
    # Merge, evaluate and export stages log one-off numbers, shown in their own cards, not as curves.
    one_off = {s.name for s in stages if s.method in ONE_OFF_METHODS}
    table = {
        key: series
        for key, by_stage in table.items()
        if (series := {name: points for name, points in by_stage.items() if name not in one_off})
    }
    charts = metric_charts(table)
    return {
        "run": run,
        "stages": stages,
        "progress": progress,
        "current": current,
        "chart": chart_payload(
            {f"{stage} {key}": points for key in LOSS_KEYS for stage, points in table.get(key, {}).items()}
        ),
        "metric_charts": charts[0],
        "routine_charts": charts[1],
        "timeline": _timeline(stages, timezone.now()),
        "graph": pipeline_graph(
            [{**s.spec, "name": s.name, "method": s.method} for s in stages],
            statuses={s.name: s.status for s in stages},
            links={s.name: f"#stage-{s.name}" for s in stages},
        ),
        "evaluations": [_evaluation(s) for s in stages if s.method == "evaluate"],
        "exports": [_export(s) for s in stages if s.method == "export"],
        "gates": run_gate_cards(run=run, stages=stages),
        "artifact_stages": [s for s in stages if s.mlflow_run_id],
        "nav": "runs",
    }


@require_GET
@team_required
def run_detail_view(request, number: int):
    run = _run_or_404(request, number)
    context = _run_context(request, run)
    if request.htmx and request.htmx.target == "run-live":
        response = render(request, "runs/detail.html#run-live", context)
        if run.is_finished:
            # One last render with the final state, then the client stops polling.
            return HttpResponseStopPolling(response.content)
        return response
    # The static parts (snapshot, lineage) are rendered once, outside the polled fragment.
    context.update(lineage=_lineage(request, run, context["stages"]), config=_config(context["stages"]))
    return render(request, "runs/detail.html", context)


@require_GET
@team_required
def run_metrics_view(request, number: int):
    """The run's metric series as chart JSON (`?key=` to pick), at most 1,000 points per series."""
    run = _run_or_404(request, number)
    keys = request.GET.getlist("key") or None
    series = {
        f"{stage_name} {key}": points
        for key, by_stage in run_metric_table_sampled(run=run, stages=list(run.stages.all())).items()
        if keys is None or key in keys
        for stage_name, points in by_stage.items()
    }
    return JsonResponse(chart_payload(series))


def _stage_or_404(run: Run, name: str | None):
    stage = next((s for s in run.stages.all() if s.name == name), None)
    if stage is None:
        raise Http404("no such stage in this run")
    return stage


@require_GET
@team_required
def run_artifacts_view(request, number: int):
    """A folder of one stage's MLflow artifacts (`?stage=<name>&path=<folder>`), listed through Django:
    the page, or the card's fragment for htmx. The browser never gets an MLflow address."""
    run = _run_or_404(request, number)
    stages = [s for s in run.stages.all() if s.mlflow_run_id]
    name = request.GET.get("stage") or (stages[0].name if stages else None)
    stage = _stage_or_404(run, name) if name else None
    try:
        listing = stage_artifact_listing(stage=stage, path=request.GET.get("path", "")) if stage else None
    except ArtifactPathError as exc:
        return HttpResponseBadRequest(str(exc))
    context = {"run": run, "stage": stage, "artifact_stages": stages, "listing": listing, "nav": "runs"}
    if request.htmx:
        return render(request, "runs/detail_artifacts.html#run-artifacts", context)
    return render(request, "runs/detail_artifacts.html", context)


@require_GET
@team_required
def run_artifact_download_view(request, number: int):
    """One artifact file (`?stage=<name>&path=<file>`), streamed from MLflow through Django in chunks,
    always as an attachment (an HTML artifact must not run as a page of this site)."""
    run = _run_or_404(request, number)
    stage = _stage_or_404(run, request.GET.get("stage"))
    try:
        download = stage_artifact_open(stage=stage, path=request.GET.get("path", ""))
    except ArtifactPathError as exc:
        return HttpResponseBadRequest(str(exc))
    except ArtifactNotFound:
        raise Http404("no such artifact file in this stage") from None
    except ArtifactUnavailable as exc:
        return HttpResponse(str(exc), status=503, content_type="text/plain")
    response = StreamingHttpResponse(download.stream, content_type=download.content_type)
    response["Content-Disposition"] = content_disposition_header(True, download.entry.name)
    if download.entry.size is not None:
        response["Content-Length"] = str(download.entry.size)
    response["Cache-Control"] = "private, no-store"
    return response


@require_POST
@team_required(write=True)
def run_cancel_view(request, number: int):
    run = _run_or_404(request, number)
    try:
        run_cancel(run=run, user=request.user)
        messages.success(request, f"Canceling run #{run.number}.")
    except IllegalTransition as exc:
        messages.error(request, str(exc))
    return redirect("runs:detail", number=run.number)


@require_POST
@team_required(write=True)
def run_rerun_view(request, number: int):
    """Re-run: the same snapshot; with `latest_data`, the same pipeline version with the newest datasets."""
    run = _run_or_404(request, number)
    latest = bool(request.POST.get("latest_data"))
    try:
        new = run_rerun(run=run, user=request.user, latest_data=latest)
    except RunError as exc:
        messages.error(request, f"Cannot re-run: {exc}")
        return redirect("runs:detail", number=run.number)
    messages.success(
        request,
        f"Started run #{new.number}" + (" with the latest data." if latest else f", an exact repeat of #{run.number}."),
    )
    return redirect("runs:detail", number=new.number)


@require_GET
@team_required
def run_forgetting_view(request):
    """Team-wide learning vs forgetting: one point per evaluated run, gain on its target (x) against what it
    forgot on its retention set (y)."""
    points = run_learning_forgetting(team=request.team)
    metrics = sorted({f"{p['target']['metric']} / {p['retention']['metric']}" for p in points})
    plot = scatter_layout(
        [
            {
                "x": p["gain"],
                "y": p["forgetting"],
                "group": p["pipeline"],
                "href": f"/runs/{p['run'].number}/",
                "label": f"#{p['run'].number} {p['pipeline']}: gain {p['gain']:+.4g} ({p['target']['metric']}), "
                f"forgot {p['forgetting']:+.4g} ({p['retention']['metric']})",
            }
            for p in points
        ],
        x_label="gain on the target (better →)",
        y_label="forgetting on the retention set (worse ↑)",
    )
    return render(request, "runs/forgetting.html", {"points": points, "plot": plot, "metrics": metrics, "nav": "runs"})

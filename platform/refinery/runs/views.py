from __future__ import annotations

from django.contrib import messages
from django.http import Http404, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseStopPolling

from refinery.core.auth import team_required
from refinery.pipelines.graph import pipeline_graph
from refinery.runs.charts import chart_payload, scatter_layout
from refinery.runs.models import IllegalTransition, Run, Status
from refinery.runs.selectors import (
    run_get,
    run_learning_forgetting,
    run_list,
    run_metric_series,
    run_metric_table,
)
from refinery.runs.services import RunError, run_cancel, run_rerun
from refinery.tracking.links import mlflow_run_url

LOSS_KEYS = ["train/loss", "eval/loss"]
ONE_OFF_METHODS = ("merge", "evaluate", "export")
# Method metrics worth seeing first (DPO rewards and margins, GRPO reward and KL, accuracies).
METRIC_PRIORITY = ("reward", "margin", "accurac", "kl", "exact_match", "log_odds", "nll", "agreement", "entropy")
# Optimiser and bookkeeping series: charted, but folded away under "More metrics".
ROUTINE_METRICS = ("learning_rate", "grad_norm", "epoch", "num_tokens", "runtime", "per_second", "total_flos",
                   "logits/", "logps/", "step_time", "clip_ratio", "completions/")


def _metric_order(key: str) -> tuple[int, str]:
    hits = [i for i, word in enumerate(METRIC_PRIORITY) if word in key]
    return (min(hits) if hits else len(METRIC_PRIORITY), key)


def metric_charts(table: dict) -> tuple[list[dict], list[dict]]:
    """Small charts for every metric but the loss, stages side by side on the run's step axis:
    (the method's own metrics, priority first; the routine optimiser/bookkeeping ones)."""
    keys = sorted((k for k in table if k not in LOSS_KEYS), key=_metric_order)
    charts = [{"key": key, "id": "metric-" + "".join(c if c.isalnum() else "-" for c in key),
               "chart": chart_payload(table[key])} for key in keys]
    routine = [c for c in charts if any(word in c["key"] for word in ROUTINE_METRICS)]
    return [c for c in charts if c not in routine], routine


def _run_or_404(request, number: int) -> Run:
    try:
        return run_get(team=request.team, number=number)
    except Run.DoesNotExist:
        raise Http404("no such run in this team") from None


@require_GET
@team_required
def run_list_view(request):
    status = request.GET.get("status") or None
    if status and status not in Status.values:
        status = None
    runs = list(run_list(team=request.team, status=status, key_metric="train/loss")[:200])
    for run in runs:
        stages = list(run.stages.all())
        run.progress = sum(s.progress for s in stages) / len(stages) if stages else 0
    active = any(not run.is_finished for run in runs)
    context = {"runs": runs, "status": status, "statuses": Status.choices, "active": active, "nav": "runs"}
    if request.htmx and request.htmx.target == "run-rows":
        response = render(request, "runs/list.html#run-rows", context)
        return response if active else HttpResponseStopPolling(response.content)
    return render(request, "runs/list.html", context)


def _evaluation(stage) -> dict:
    """An evaluate stage's results for the run page: headline numbers, a metric table, sample generations."""
    summary = stage.summary or {}
    flat = summary.get("metrics") or {}
    rows = []
    for key, value in sorted(flat.items()):
        for prefix, baseline_prefix in (("eval/", "baseline/"), ("retention/", "retention_baseline/")):
            if key.startswith(prefix) and isinstance(value, (int, float)):
                rows.append((key, value, flat.get(baseline_prefix + key[len(prefix):])))
    baseline = (stage.spec.get("config") or {}).get("baseline_stage") or "the base model"
    return {"stage": stage, "target": summary.get("target"), "retention": summary.get("retention"),
            "metrics": rows, "samples": summary.get("samples") or [], "baseline": baseline}


def _export(stage) -> dict:
    summary = stage.summary or {}
    saved = None
    if summary.get("size_bytes") and summary.get("quantized_size_bytes"):
        saved = 100.0 * (1 - summary["quantized_size_bytes"] / summary["size_bytes"])
    return {"stage": stage, "summary": summary if summary.get("size_bytes") else None, "saved": saved}


def _run_context(request, run: Run) -> dict:
    stages = list(run.stages.order_by("index"))
    progress = sum(s.progress for s in stages) / len(stages) if stages else 0
    current = next((s for s in stages if s.status in (Status.RUNNING, Status.CANCELING)), None)
    table = run_metric_table(run=run)
    # Merge, evaluate and export stages log one-off numbers, shown in their own cards, not as curves.
    one_off = {s.name for s in stages if s.method in ONE_OFF_METHODS}
    table = {key: series for key, by_stage in table.items()
             if (series := {name: points for name, points in by_stage.items() if name not in one_off})}
    charts = metric_charts(table)
    return {
        "run": run,
        "stages": stages,
        "progress": progress,
        "current": current,
        "chart": chart_payload({f"{stage} {key}": points for key in LOSS_KEYS
                                for stage, points in table.get(key, {}).items()}),
        "metric_charts": charts[0],
        "routine_charts": charts[1],
        "mlflow_url": mlflow_run_url(run.mlflow_experiment_id, run.mlflow_run_id),
        "stage_links": {s.pk: mlflow_run_url(run.mlflow_experiment_id, s.mlflow_run_id) for s in stages},
        "graph": pipeline_graph([{**s.spec, "name": s.name, "method": s.method} for s in stages],
                                statuses={s.name: s.status for s in stages}),
        "evaluations": [_evaluation(s) for s in stages if s.method == "evaluate"],
        "exports": [_export(s) for s in stages if s.method == "export"],
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
    return render(request, "runs/detail.html", context)


@require_GET
@team_required
def run_metrics_view(request, number: int):
    run = _run_or_404(request, number)
    keys = request.GET.getlist("key") or None
    return JsonResponse(chart_payload(run_metric_series(run=run, keys=keys)))


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
    messages.success(request, f"Started run #{new.number}" + (" with the latest data." if latest else
                                                               f", an exact repeat of #{run.number}."))
    return redirect("runs:detail", number=new.number)


@require_GET
@team_required
def run_forgetting_view(request):
    """Team-wide learning vs forgetting: one point per evaluated run, gain on its target (x) against what it
    forgot on its retention set (y)."""
    points = run_learning_forgetting(team=request.team)
    metrics = sorted({f"{p['target']['metric']} / {p['retention']['metric']}" for p in points})
    plot = scatter_layout(
        [{"x": p["gain"], "y": p["forgetting"], "group": p["pipeline"], "href": f"/runs/{p['run'].number}/",
          "label": f"#{p['run'].number} {p['pipeline']}: gain {p['gain']:+.4g} ({p['target']['metric']}), "
                   f"forgot {p['forgetting']:+.4g} ({p['retention']['metric']})"} for p in points],
        x_label="gain on the target (better →)", y_label="forgetting on the retention set (worse ↑)",
    )
    return render(request, "runs/forgetting.html", {"points": points, "plot": plot, "metrics": metrics,
                                                    "nav": "runs"})

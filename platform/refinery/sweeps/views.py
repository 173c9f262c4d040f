from __future__ import annotations

from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods
from django_htmx.http import HttpResponseStopPolling

from refinery.core.auth import team_required
from refinery.pipelines.models import Pipeline
from refinery.pipelines.selectors import pipeline_get, pipeline_list
from refinery.pipelines.services import pipeline_current_version
from refinery.sweeps.charts import sweep_scatters
from refinery.sweeps.forms import padded, parameters_from_rows, parse_rows
from refinery.sweeps.models import MAX_TRIALS, Sweep
from refinery.sweeps.parameters import tunable_fields
from refinery.sweeps.selectors import metric_suggestions, sweep_get, sweep_list, sweep_results, sweep_status
from refinery.sweeps.services import SweepError, sweep_create

# Placeholders for the parameter rows: settings people sweep first, with typical values.
EXAMPLES = (
    (".config.learning_rate", "1e-4, 3e-4, 1e-3"),
    (".adapter.r", "4, 8, 16"),
    (".config.num_train_epochs", "1, 2, 3"),
    (".config.beta", "0.05, 0.1, 0.5"),
)


@require_GET
@team_required
def sweep_list_view(request):
    sweeps = list(sweep_list(team=request.team))
    for sweep in sweeps:
        sweep.status = sweep_status(total=sweep.trial_count, active=sweep.active_count, succeeded=sweep.succeeded_count)
    return render(request, "sweeps/list.html", {"sweeps": sweeps, "nav": "sweeps"})


def _pipeline_or_404(request, pk) -> Pipeline:
    try:
        return pipeline_get(team=request.team, pk=int(pk))
    except (TypeError, ValueError, Pipeline.DoesNotExist):
        raise Http404("no such pipeline in this team") from None


def _form_context(
    request, *, pipeline: Pipeline | None, values: dict, rows: list[dict], errors: dict[str, str]
) -> dict:
    context = {"values": values, "errors": errors, "pipeline": pipeline, "max_trials": MAX_TRIALS, "nav": "sweeps"}
    if pipeline is None:
        context["pipelines"] = pipeline_list(team=request.team)
        return context
    version = pipeline_current_version(pipeline)
    fields = tunable_fields(version.spec)
    examples = [(path, values) for suffix, values in EXAMPLES for path in fields if path.endswith(suffix)]
    rows = padded(rows)
    for i, row in enumerate(rows):
        # "bad_<part>" rather than a dict: a template would read errors.values as the dict's method.
        row.update(
            {f"bad_{name}": f"parameters.{i}.{name}" in errors for name in ("path", "values", "min", "max", "scale")}
        )
        row["hint_path"], row["hint_values"] = examples[i % len(examples)] if examples else ("", "")
    context.update(
        version=version,
        rows=rows,
        fields=[{"path": path, **field} for path, field in fields.items()],
        metrics=metric_suggestions(version=version)[0],
    )
    return context


@require_http_methods(["GET", "POST"])
@team_required(write=True)
def sweep_create_view(request):
    """New sweep of a pipeline's current version (?pipeline=<pk>); without one, choose the pipeline first."""
    source = request.POST if request.method == "POST" else request.GET
    pipeline = _pipeline_or_404(request, source["pipeline"]) if source.get("pipeline") else None
    if request.method == "GET":
        values, rows = {"mode": "grid", "samples": 8, "seed": "", "name": "", "metric": "", "goal": "min"}, []
        if pipeline is not None:
            _, values["metric"], values["goal"] = metric_suggestions(version=pipeline_current_version(pipeline))
            values["name"] = f"{pipeline.name}-sweep"
        return render(
            request, "sweeps/form.html", _form_context(request, pipeline=pipeline, values=values, rows=rows, errors={})
        )
    if pipeline is None:
        raise Http404("choose a pipeline")
    values = {key: request.POST.get(key, "").strip() for key in ("name", "mode", "samples", "seed", "metric", "goal")}
    rows = parse_rows(request.POST)
    try:
        sweep = sweep_create(
            pipeline=pipeline,
            user=request.user,
            name=values["name"],
            mode=values["mode"],
            parameters=parameters_from_rows(rows),
            samples=values["samples"],
            seed=values["seed"],
            metric=values["metric"],
            goal=values["goal"],
        )
    except SweepError as exc:
        context = _form_context(request, pipeline=pipeline, values=values, rows=rows, errors=exc.errors)
        return render(request, "sweeps/form.html", context, status=400)
    messages.success(request, f"Queued {sweep.trials.count()} runs of {pipeline.name} for sweep {sweep.name}.")
    return redirect("sweeps:detail", pk=sweep.pk)


def _sweep_or_404(request, pk: int) -> Sweep:
    try:
        return sweep_get(team=request.team, pk=pk)
    except Sweep.DoesNotExist:
        raise Http404("no such sweep in this team") from None


@require_GET
@team_required
def sweep_detail_view(request, pk: int):
    """The trials ranked by a metric (?metric=, ?goal=), one scatter per parameter; polls while runs are active."""
    sweep = _sweep_or_404(request, pk)
    results = sweep_results(
        sweep=sweep, metric=request.GET.get("metric", "").strip() or None, goal=request.GET.get("goal") or None
    )
    columns = []
    for path in sweep.paths:
        stage, part, field = path.split(".", 2)
        columns.append({"path": path, "stage": stage, "part": part, "field": field})
    context = {
        "sweep": sweep,
        "results": results,
        "columns": columns,
        "nav": "sweeps",
        "charts": sweep_scatters(sweep=sweep, results=results),
    }
    if request.htmx and request.htmx.target == "sweep-live":
        response = render(request, "sweeps/detail.html#sweep-live", context)
        return response if results.active else HttpResponseStopPolling(response.content)
    return render(request, "sweeps/detail.html", context)

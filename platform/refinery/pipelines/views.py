from __future__ import annotations

from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from refinery.basemodels.selectors import base_model_list
from refinery.core.auth import team_required
from refinery.data.selectors import dataset_list
from refinery.pipelines.forms import parse_stages, spec_from_stages, stage_context
from refinery.pipelines.models import Pipeline
from refinery.pipelines.selectors import pipeline_get, pipeline_list
from refinery.pipelines.services import pipeline_create
from refinery.pipelines.specs import SpecError
from refinery.runs.selectors import run_list
from refinery.runs.services import RunError, run_create


@require_GET
@team_required
def pipeline_list_view(request):
    return render(request, "pipelines/list.html", {"pipelines": pipeline_list(team=request.team), "nav": "pipelines"})


def _editor_context(request, *, values: dict, stages: list[dict], errors: dict[str, str]) -> dict:
    return {
        "values": values,
        "stages": [stage_context(index=i, stage=s, errors=errors) for i, s in enumerate(stages)],
        "errors": errors,
        "general_errors": [m for k, m in errors.items() if k in ("spec", "stages", "seed")],
        "base_models": base_model_list(team=request.team),
        "datasets": dataset_list(team=request.team),
        "nav": "pipelines",
    }


@require_http_methods(["GET", "POST"])
@team_required(write=True)
def pipeline_create_view(request):
    if request.method == "GET":
        values = {"name": "", "description": "", "base_model_id": "", "seed": 42}
        return render(request, "pipelines/form.html", _editor_context(request, values=values, stages=[{}], errors={}))
    values = {k: request.POST.get(k, "") for k in ("name", "description", "base_model_id", "seed")}
    stages = parse_stages(request.POST)
    try:
        seed = int(values["seed"] or 42)
    except ValueError:
        seed = values["seed"]
    try:
        pipeline = pipeline_create(
            team=request.team, user=request.user, name=values["name"], base_model_id=values["base_model_id"],
            spec=spec_from_stages(stages, seed), description=values["description"],
        )
    except SpecError as exc:
        context = _editor_context(request, values=values, stages=stages or [{}], errors=exc.errors)
        return render(request, "pipelines/form.html", context, status=400)
    messages.success(request, f"Created pipeline {pipeline.name}.")
    return redirect("pipelines:detail", pk=pipeline.pk)


@require_GET
@team_required
def stage_form_view(request):
    """htmx: a fresh stage fieldset (add stage), or one re-rendered for another method."""
    try:
        index = max(0, min(int(request.GET.get("index", 0)), 31))
    except ValueError:
        index = 0
    def param(name: str) -> str | None:
        # The method select sends its own field (stages-<i>-method) and hx-includes the stage's
        # other fields; "Add stage" sends none of them.
        return request.GET.get(f"stages-{index}-{name}") or request.GET.get(name)

    stage = {"method": param("method"), "name": param("name"), "dataset_id": param("dataset_id"),
             "input_ref": param("input")}
    context = {"stage": stage_context(index=index, stage=stage), "datasets": dataset_list(team=request.team)}
    return render(request, "pipelines/stage_form.html", context)


@require_GET
@team_required
def pipeline_detail_view(request, pk: int):
    try:
        pipeline = pipeline_get(team=request.team, pk=pk)
    except Pipeline.DoesNotExist:
        raise Http404("no such pipeline in this team") from None
    datasets = {d.pk: d for d in dataset_list(team=request.team)}
    runs = run_list(team=request.team).filter(pipeline=pipeline)[:20]
    return render(request, "pipelines/detail.html",
                  {"pipeline": pipeline, "datasets": datasets, "runs": runs, "nav": "pipelines"})


@require_POST
@team_required(write=True)
def pipeline_run_view(request, pk: int):
    try:
        pipeline = pipeline_get(team=request.team, pk=pk)
    except Pipeline.DoesNotExist:
        raise Http404("no such pipeline in this team") from None
    try:
        run = run_create(pipeline=pipeline, user=request.user)
    except RunError as exc:
        messages.error(request, f"Cannot start: {exc}")
        return redirect("pipelines:detail", pk=pk)
    messages.success(request, f"Started run #{run.number}.")
    return redirect("runs:detail", number=run.number)

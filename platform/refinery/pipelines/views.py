from __future__ import annotations

from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseStopPolling

from refinery.basemodels.selectors import base_model_list
from refinery.core.auth import team_required
from refinery.data.selectors import dataset_list
from refinery.pipelines.forms import parse_stages, spec_from_stages, stage_context, stages_for_editor
from refinery.pipelines.graph import pipeline_graph
from refinery.pipelines.models import Pipeline
from refinery.pipelines.presets import PRESETS, preset_spec
from refinery.pipelines.selectors import pipeline_get, pipeline_list
from refinery.pipelines.services import pipeline_create, pipeline_current_version, pipeline_update
from refinery.pipelines.specs import SpecError, auto_evaluate_stages
from refinery.runs.selectors import run_list
from refinery.runs.services import RunError, run_create


@require_GET
@team_required
def pipeline_list_view(request):
    return render(request, "pipelines/list.html", {"pipelines": pipeline_list(team=request.team), "nav": "pipelines"})


def _editor_context(
    request, *, values: dict, stages: list[dict], errors: dict[str, str], pipeline: Pipeline | None = None
) -> dict:
    names = [s.get("name") or f"stage-{i + 1}" for i, s in enumerate(stages)]
    return {
        "values": values,
        "pipeline": pipeline,
        "stages": [stage_context(index=i, stage=s, errors=errors, names=names) for i, s in enumerate(stages)],
        "errors": errors,
        "general_errors": [m for k, m in errors.items() if k in ("spec", "stages", "seed")],
        "base_models": base_model_list(team=request.team),
        "datasets": dataset_list(team=request.team),
        "presets": PRESETS,
        "nav": "pipelines",
    }


def _posted(request) -> tuple[dict, dict]:
    values = {
        k: request.POST.get(k, "") for k in ("name", "description", "base_model_id", "seed", "retention_dataset_id")
    }
    values["auto_evaluate"] = request.POST.get("auto_evaluate") == "on"
    stages = parse_stages(request.POST)
    try:
        seed = int(values["seed"] or 42)
    except ValueError:
        seed = values["seed"]
    spec = spec_from_stages(
        stages, seed, retention_dataset_id=values["retention_dataset_id"] or None, auto_evaluate=values["auto_evaluate"]
    )
    return values, {"spec": spec, "stages": stages}


@require_http_methods(["GET", "POST"])
@team_required(write=True)
def pipeline_create_view(request):
    if request.method == "GET":
        values = {
            "name": "",
            "description": "",
            "base_model_id": "",
            "seed": 42,
            "auto_evaluate": True,
            "retention_dataset_id": "",
        }
        stages = [{}]
        key = request.GET.get("template")
        if key in PRESETS:
            spec = preset_spec(team=request.team, key=key)
            values.update(name=key, description=PRESETS[key]["description"])
            stages = stages_for_editor(spec)
        return render(request, "pipelines/form.html", _editor_context(request, values=values, stages=stages, errors={}))
    values, posted = _posted(request)
    try:
        pipeline = pipeline_create(
            team=request.team,
            user=request.user,
            name=values["name"],
            base_model_id=values["base_model_id"],
            spec=posted["spec"],
            description=values["description"],
        )
    except SpecError as exc:
        context = _editor_context(request, values=values, stages=posted["stages"] or [{}], errors=exc.errors)
        return render(request, "pipelines/form.html", context, status=400)
    messages.success(request, f"Created pipeline {pipeline.name}.")
    return redirect("pipelines:detail", pk=pipeline.pk)


def _pipeline_or_404(request, pk: int) -> Pipeline:
    try:
        return pipeline_get(team=request.team, pk=pk)
    except Pipeline.DoesNotExist:
        raise Http404("no such pipeline in this team") from None


@require_http_methods(["GET", "POST"])
@team_required(write=True)
def pipeline_edit_view(request, pk: int):
    """Edit a pipeline; saving a changed spec makes a new version (runs keep theirs)."""
    pipeline = _pipeline_or_404(request, pk)
    if request.method == "GET":
        spec = pipeline.spec
        values = {
            "name": pipeline.name,
            "description": pipeline.description,
            "base_model_id": pipeline.base_model_id,
            "seed": spec.get("seed", 42),
            "auto_evaluate": spec.get("auto_evaluate", True),
            "retention_dataset_id": spec.get("retention_dataset_id") or "",
        }
        context = _editor_context(request, values=values, stages=stages_for_editor(spec), errors={}, pipeline=pipeline)
        return render(request, "pipelines/form.html", context)
    values, posted = _posted(request)
    try:
        changed = pipeline_update(
            pipeline=pipeline,
            user=request.user,
            name=values["name"],
            base_model_id=values["base_model_id"],
            spec=posted["spec"],
            description=values["description"],
        )
    except SpecError as exc:
        context = _editor_context(
            request, values=values, stages=posted["stages"] or [{}], errors=exc.errors, pipeline=pipeline
        )
        return render(request, "pipelines/form.html", context, status=400)
    pipeline.refresh_from_db()
    messages.success(
        request,
        f"Saved {pipeline.name} as version {pipeline.version}."
        if changed
        else f"Saved {pipeline.name} (no change to its stages, still version {pipeline.version}).",
    )
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

    stage = {
        "method": param("method"),
        "name": param("name"),
        "dataset_id": param("dataset_id"),
        "input_ref": param("input"),
    }
    context = {"stage": stage_context(index=index, stage=stage), "datasets": dataset_list(team=request.team)}
    return render(request, "pipelines/stage_form.html", context)


@require_GET
@team_required
def pipeline_detail_view(request, pk: int):
    pipeline = _pipeline_or_404(request, pk)
    versions = list(pipeline.versions.select_related("created_by").order_by("-number"))
    shown = pipeline_current_version(pipeline) if not versions else versions[0]
    wanted = request.GET.get("version")
    if wanted and wanted.isdigit():
        shown = next((v for v in versions if v.number == int(wanted)), shown)
    datasets = {d.pk: d for d in dataset_list(team=request.team)}
    runs = run_list(team=request.team).filter(pipeline=pipeline).select_related("pipeline_version")[:20]
    try:
        auto = auto_evaluate_stages(shown.spec)
    except Exception:  # noqa: BLE001 - an old version may no longer validate; draw what it says
        auto = []
    stages = shown.stages + auto
    # The graph shows the live status of the newest run of the version shown.
    latest = next((r for r in runs if r.pipeline_version_id == shown.pk), None)
    statuses = {s.name: s.status for s in latest.stages.all()} if latest else {}
    links = {name: reverse("runs:detail", args=[latest.number]) for name in statuses} if latest else {}
    context = {
        "pipeline": pipeline,
        "shown": shown,
        "versions": versions,
        "datasets": datasets,
        "runs": runs,
        "stages": stages,
        "auto_stages": auto,
        "graph": pipeline_graph(stages, statuses=statuses, links=links),
        "latest": latest,
        "retention": datasets.get(shown.spec.get("retention_dataset_id")),
        "nav": "pipelines",
    }
    if request.htmx and request.htmx.target == "pipeline-graph":
        response = render(request, "pipelines/detail.html#pipeline-graph", context)
        return response if latest and not latest.is_finished else HttpResponseStopPolling(response.content)
    return render(request, "pipelines/detail.html", context)


@require_POST
@team_required(write=True)
def pipeline_run_view(request, pk: int):
    pipeline = _pipeline_or_404(request, pk)
    try:
        run = run_create(pipeline=pipeline, user=request.user)
    except RunError as exc:
        messages.error(request, f"Cannot start: {exc}")
        return redirect("pipelines:detail", pk=pk)
    messages.success(request, f"Started run #{run.number}.")
    return redirect("runs:detail", number=run.number)

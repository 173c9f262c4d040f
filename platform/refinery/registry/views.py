"""Registry pages: the team's models, one model's versions and aliases, promoting a stage output."""

from __future__ import annotations

from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from refinery.core.auth import team_required
from refinery.registry.lineage import promotion_metrics
from refinery.registry.models import ModelVersion, RegisteredModel
from refinery.registry.selectors import (
    DEFAULT_ALIASES,
    model_page,
    model_version_get,
    pipeline_model_name,
    promotable_stage_get,
    promotable_stages,
    registered_model_choices,
    registered_model_get,
    registered_model_list,
    run_stages,
    stage_registrations,
)
from refinery.registry.services import (
    RegistryError,
    alias_remove,
    alias_rollback,
    alias_set,
    model_promote,
    promotable_check,
)
from refinery.runs.models import StageRun

NEW_MODEL = "__new__"


@require_GET
@team_required
def model_list_view(request):
    models = registered_model_list(team=request.team)
    return render(request, "registry/list.html", {"models": models, "nav": "registry"})


def _model_or_404(request, name: str) -> RegisteredModel:
    try:
        return registered_model_get(team=request.team, name=name)
    except RegisteredModel.DoesNotExist:
        raise Http404("no such model in this team") from None


def _render_model(request, model: RegisteredModel, *, status: int = 200):
    context = {
        "page": model_page(registered_model=model),
        "model": model,
        "nav": "registry",
        "default_aliases": DEFAULT_ALIASES,
    }
    if request.htmx:
        return render(request, "registry/detail.html#model-live", context, status=status)
    return render(request, "registry/detail.html", context, status=status)


@require_GET
@team_required
def model_detail_view(request, name: str):
    return _render_model(request, _model_or_404(request, name))


def _event_text(event) -> str:
    new = f"v{event.version.version}" if event.version else ""
    old = f"v{event.previous_version.version}" if event.previous_version else ""
    if event.action == "removed":
        return f"Removed {event.alias} (it pointed at {old})."
    if event.action == "rolled_back":
        return f"Rolled {event.alias} back to {new}" + (f" (from {old})." if old else ".")
    return f"{event.alias} now points at {new}" + (f" (was {old})." if old else ".")


def _alias_action(request, name: str, action):
    """Run one alias service; a refusal becomes an error message. Plain POST: redirect to the model page;
    htmx: the page's live fragment, with the message in it."""
    model = _model_or_404(request, name)
    try:
        event = action(model)
    except RegistryError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, _event_text(event))
    if request.htmx:
        return _render_model(request, model)
    return redirect("registry:detail", name=model.name)


def _version_or_error(model: RegisteredModel, raw: str) -> ModelVersion:
    try:
        return model_version_get(registered_model=model, version=int(raw))
    except (TypeError, ValueError, ModelVersion.DoesNotExist):
        raise RegistryError(f"{model.name} has no version {raw!r}") from None


@require_POST
@team_required(write=True)
def alias_set_view(request, name: str):
    alias = request.POST.get("alias", "").strip() or request.POST.get("custom_alias", "").strip()
    return _alias_action(
        request,
        name,
        lambda model: alias_set(
            team=request.team,
            user=request.user,
            registered_model=model,
            alias=alias,
            version=_version_or_error(model, request.POST.get("version", "")),
        ),
    )


@require_POST
@team_required(write=True)
def alias_remove_view(request, name: str):
    return _alias_action(
        request,
        name,
        lambda model: alias_remove(
            team=request.team, user=request.user, registered_model=model, alias=request.POST.get("alias", "")
        ),
    )


@require_POST
@team_required(write=True)
def alias_rollback_view(request, name: str):
    return _alias_action(
        request,
        name,
        lambda model: alias_rollback(
            team=request.team, user=request.user, registered_model=model, alias=request.POST.get("alias", "")
        ),
    )


def _stage_or_404(request, run, stage) -> StageRun:
    try:
        return promotable_stage_get(team=request.team, run_number=int(run), stage_name=str(stage))
    except (TypeError, ValueError, StageRun.DoesNotExist):
        raise Http404("no such stage in this team's runs") from None


@require_http_methods(["GET", "POST"])
@team_required(write=True)
def promote_view(request):
    """?run=<number>&stage=<name>: promote that stage's output (form: an existing model or a new name,
    an optional alias). Without a stage: the team's promotable stages, newest first."""
    source = request.POST if request.method == "POST" else request.GET
    if not source.get("run") or not source.get("stage"):
        return render(
            request, "registry/promote_pick.html", {"stages": promotable_stages(team=request.team), "nav": "registry"}
        )
    stage = _stage_or_404(request, source["run"], source["stage"])
    models = list(registered_model_choices(team=request.team))
    usual = pipeline_model_name(team=request.team, pipeline_id=stage.run.pipeline_id)
    values = {"model": usual or NEW_MODEL, "new_name": "", "description": "", "alias": ""}
    error = ""
    if request.method == "POST":
        values = {key: request.POST.get(key, "").strip() for key in values}
        name = values["new_name"] if values["model"] in ("", NEW_MODEL) else values["model"]
        try:
            if values["new_name"] and values["model"] not in ("", NEW_MODEL):
                raise RegistryError(
                    f"choose “New model…” to create {values['new_name']!r}, or clear the new name "
                    f"to add a version to {values['model']}"
                )
            version = model_promote(
                team=request.team,
                user=request.user,
                stage_run=stage,
                model_name=name,
                description=values["description"],
                alias=values["alias"] or None,
            )
        except RegistryError as exc:
            error = str(exc)
        else:
            alias_note = f" and {values['alias']} points at it" if values["alias"] else ""
            messages.success(
                request,
                f"Run #{stage.run.number} / {stage.name} is version {version.version} of "
                f"{version.registered_model.name}{alias_note}.",
            )
            return redirect("registry:detail", name=version.registered_model.name)
    refusal = ""
    try:
        promotable_check(team=request.team, stage_run=stage)
    except RegistryError as exc:
        refusal = str(exc)
    stages = run_stages(stage_run=stage)
    context = {
        "stage": stage,
        "run": stage.run,
        "models": models,
        "values": values,
        "error": error,
        "refusal": refusal,
        "new_model": NEW_MODEL,
        "registrations": stage_registrations(team=request.team, stage_run=stage),
        "preview": promotion_metrics(stage, stages) if not refusal else None,
        "default_aliases": DEFAULT_ALIASES,
        "nav": "registry",
    }
    return render(request, "registry/promote.html", context, status=400 if error else 200)

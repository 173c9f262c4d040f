"""/api/v1/registered-models: the team's registered models, their versions and their aliases.

Reads come from the registry's selectors (Refinery's own rows: MLflow is never asked on a read); writes go
through refinery.registry.services (model_promote, alias_set, alias_remove, alias_rollback), which are the
only code that moves a version or an alias in MLflow. Every lookup is inside the token's team (another
team's model answers 404, without echoing the name); writes need a member or owner with a read-write token
(403 otherwise). A refused change is 400 with `errors` naming the field it is about (model, alias, version,
run or stage); MLflow refusing or being unreachable is a 400 too, and changes nothing.

The serializers are plain functions from rows to dicts next to their schemas, so a field added to a
version or an alias event (a gate decision, say) is one line in each.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ninja import Router, Schema
from pydantic import Field

from refinery.api.schemas import ErrorOut, In
from refinery.registry.models import AliasEvent, ModelVersion, RegisteredModel
from refinery.registry.selectors import (
    AliasState,
    model_page,
    model_version_get,
    promotable_stage_get,
    registered_model_get,
    registered_model_list,
)
from refinery.registry.services import (
    RegistryError,
    alias_clean,
    alias_remove,
    alias_rollback,
    alias_set,
    model_name_clean,
    model_promote,
    promotable_check,
)
from refinery.runs.models import Run, StageRun
from refinery.runs.selectors import run_get

router = Router(tags=["registry"])

NO_MODEL = {"detail": "no registered model of that name in this team"}
MAX_INT = 2**31 - 1  # version and run numbers are 32-bit columns


# --- schemas ---------------------------------------------------------------------------------------------


class VersionSummaryOut(Schema):
    version: int
    run: int = Field(description="the number of the run that made it")
    stage: str = Field(description="the stage of that run whose output this version is")
    kind: str = Field(description="model or adapter")
    promoted_by: str | None
    promoted_at: datetime
    aliases: list[str] = Field(description="the aliases that point at this version now")
    headline: list[dict[str, Any]] = Field(
        description="the numbers tables show: [{key, label, value, better, stage, model}]"
    )


class VersionOut(VersionSummaryOut):
    model: str = Field(description="the registered model's name")
    source_uri: str = Field(description="where its files are: runs:/<MLflow run>/<artifact path>")
    metrics: dict[str, Any] = Field(
        description="copied at promotion: {stage: {key: number} of the stage's "
        "summary, evaluations: [{stage, target, retention, metrics}], "
        "headline, pending}"
    )
    lineage: dict[str, Any] = Field(
        description="run, pipeline version, base model and revision, datasets by "
        "sha256, the stage chain, code version, seed"
    )


class ModelOut(Schema):
    name: str
    description: str
    created_by: str | None
    created_at: datetime
    version_count: int
    latest_version: int | None
    aliases: dict[str, int] = Field(description="{alias: version} as they point now")


class ModelDetailOut(ModelOut):
    versions: list[VersionSummaryOut] = Field(description="newest first")


class AliasStateOut(Schema):
    alias: str
    version: int | None = Field(description="the version it points at now (null: not set)")
    can_roll_back: bool
    rollback_to: int | None = Field(description="where a rollback would point it")


class AliasEventOut(Schema):
    alias: str
    action: str = Field(description="set, removed or rolled_back")
    version: int | None = Field(description="the version it points at after the change (null: removed)")
    previous: int | None = Field(description="the version it pointed at before the change")
    user: str | None
    at: datetime


class AliasesOut(Schema):
    aliases: list[AliasStateOut] = Field(
        description="staging and production, then every other alias that is set or has history"
    )
    history: list[AliasEventOut] = Field(description="every change, newest first")


class AliasChangeOut(Schema):
    event: AliasEventOut = Field(description="the change just made")
    alias: AliasStateOut = Field(description="where the alias stands now")


class PromoteIn(In):
    run: int = Field(description="the run's number")
    stage: str = Field(description="the name of a succeeded stage of that run whose output is a model or an adapter")
    model: str = Field(description="the registered model's name; created on first use")
    description: str = Field("", description="the new model's description (first promotion only)")
    alias: str | None = Field(None, description="an alias to point at the new version, e.g. staging")


class AliasSetIn(In):
    version: int = Field(description="the version number the alias should point at")


# --- serializers -----------------------------------------------------------------------------------------


def _username(user) -> str | None:
    return user.get_username() if user is not None else None


def _version_summary(version: ModelVersion, alias_names: list[str]) -> dict:
    # the stage's name is in the lineage, copied at promotion: no query per version
    return {
        "version": version.version,
        "run": version.run.number,
        "stage": (version.lineage or {}).get("stage") or version.stage_run.name,
        "kind": version.kind,
        "promoted_by": _username(version.promoted_by),
        "promoted_at": version.promoted_at,
        "aliases": alias_names,
        "headline": (version.metrics or {}).get("headline") or [],
    }


def _version_out(version: ModelVersion, model: RegisteredModel, alias_names: list[str]) -> dict:
    return {
        **_version_summary(version, alias_names),
        "model": model.name,
        "source_uri": version.source_uri,
        "metrics": version.metrics or {},
        "lineage": version.lineage or {},
    }


def _model_out(model: RegisteredModel, *, latest: int | None, count: int, aliases: dict[str, int]) -> dict:
    return {
        "name": model.name,
        "description": model.description,
        "created_by": _username(model.created_by),
        "created_at": model.created_at,
        "version_count": count,
        "latest_version": latest,
        "aliases": aliases,
    }


def _state_out(state: AliasState) -> dict:
    return {
        "alias": state.alias,
        "version": state.version.version if state.version else None,
        "can_roll_back": state.can_roll_back,
        "rollback_to": state.rollback_to.version if state.rollback_to else None,
    }


def _number(version: ModelVersion | None) -> int | None:
    return version.version if version is not None else None


def _event_out(event: AliasEvent) -> dict:
    # model_page attaches the version it already loaded (and sets previous_version from its rows): no query
    version = event.version_row if hasattr(event, "version_row") else event.version
    return {
        "alias": event.alias,
        "action": event.action,
        "version": _number(version),
        "previous": _number(event.previous_version),
        "user": _username(event.user),
        "at": event.at,
    }


# --- lookups ---------------------------------------------------------------------------------------------


def _model(request, model_name: str) -> RegisteredModel | None:
    """The team's model, or None; a name no model can have is not looked up."""
    try:
        if model_name_clean(model_name) != model_name:
            return None
        return registered_model_get(team=request.team, name=model_name)
    except (RegistryError, RegisteredModel.DoesNotExist):
        return None


def _version(model: RegisteredModel, number: int) -> ModelVersion | None:
    if not 0 < number <= MAX_INT:
        return None
    try:
        return model_version_get(registered_model=model, version=number)
    except ModelVersion.DoesNotExist:
        return None


def _refused(errors: dict[str, str]):
    return 400, {"detail": "; ".join(errors.values()), "errors": errors}


def _require_write(request) -> None:
    from refinery.api.views import _require_write as require

    require(request)


def _alias_change(model: RegisteredModel, event: AliasEvent) -> dict:
    page = model_page(registered_model=model, history_limit=0)
    state = next(s for s in page.aliases if s.alias == event.alias)
    return {"event": _event_out(event), "alias": _state_out(state)}


# --- models ----------------------------------------------------------------------------------------------


@router.get("", response=list[ModelOut])
def list_registered_models(request):
    """The team's registered models: description, newest version and where each alias points."""
    return [
        _model_out(
            m,
            latest=m.latest.version if m.latest else None,
            count=m.version_count,
            aliases={row.alias: row.version.version for row in m.alias_rows},
        )
        for m in registered_model_list(team=request.team)
    ]


@router.post("/promote", response={201: VersionOut, 400: ErrorOut})
def promote(request, payload: PromoteIn):
    """Register a succeeded stage's model or adapter as the next version of `model` (created on first use),
    optionally pointing `alias` at it. Its metrics and lineage are copied from the run now."""
    _require_write(request)
    errors: dict[str, str] = {}
    checks = [("model", model_name_clean, payload.model)] + (
        [("alias", alias_clean, payload.alias)] if payload.alias else []
    )
    for field, clean, value in checks:  # the services' own checks, run first to name the field
        try:
            clean(value)
        except RegistryError as exc:
            errors[field] = str(exc)
    stage = _stage(request, payload, errors)
    if errors:
        return _refused(errors)
    try:
        version = model_promote(
            team=request.team,
            user=request.user,
            stage_run=stage,
            model_name=payload.model,
            description=payload.description,
            alias=payload.alias or None,
        )
    except RegistryError as exc:
        return _refused({"model": str(exc)})
    return 201, _version_out(version, version.registered_model, sorted(a.alias for a in version.aliases.all()))


def _stage(request, payload: PromoteIn, errors: dict[str, str]) -> StageRun | None:
    """The stage to promote, or None with the reason under "run" or "stage"."""
    if not 0 < payload.run <= MAX_INT:
        errors["run"] = f"run #{payload.run} does not exist in this team"
        return None
    try:
        stage = promotable_stage_get(team=request.team, run_number=payload.run, stage_name=payload.stage)
    except StageRun.DoesNotExist:
        try:
            run_get(team=request.team, number=payload.run)
        except Run.DoesNotExist:
            errors["run"] = f"run #{payload.run} does not exist in this team"
        else:
            errors["stage"] = f"run #{payload.run} has no stage {payload.stage!r}"
        return None
    try:
        promotable_check(team=request.team, stage_run=stage)
    except RegistryError as exc:
        errors["stage"] = str(exc)
        return None
    return stage


@router.get("/{model_name}", response={200: ModelDetailOut, 404: ErrorOut})
def get_registered_model(request, model_name: str):
    """One model: where its aliases point and a summary of every version, newest first."""
    model = _model(request, model_name)
    if model is None:
        return 404, NO_MODEL
    page = model_page(registered_model=model, history_limit=0)
    aliases = {s.alias: s.version.version for s in page.aliases if s.version is not None}
    return 200, {
        **_model_out(
            model,
            latest=page.versions[0].version if page.versions else None,
            count=len(page.versions),
            aliases=dict(sorted(aliases.items())),
        ),
        "versions": [_version_summary(v, v.alias_names) for v in page.versions],
    }


# --- versions --------------------------------------------------------------------------------------------


@router.get("/{model_name}/versions", response={200: list[VersionOut], 404: ErrorOut})
def list_model_versions(request, model_name: str):
    """Every version, newest first, with its metrics, lineage, source and the aliases that point at it."""
    model = _model(request, model_name)
    if model is None:
        return 404, NO_MODEL
    page = model_page(registered_model=model, history_limit=0)
    return 200, [_version_out(v, model, v.alias_names) for v in page.versions]


@router.get("/{model_name}/versions/{int:version}", response={200: VersionOut, 404: ErrorOut})
def get_model_version(request, model_name: str, version: int):
    model = _model(request, model_name)
    if model is None:
        return 404, NO_MODEL
    found = _version(model, version)
    if found is None:
        return 404, {"detail": f"{model.name} has no version {version}"}
    return 200, _version_out(found, model, sorted(a.alias for a in found.aliases.all()))


# --- aliases ---------------------------------------------------------------------------------------------


@router.get("/{model_name}/aliases", response={200: AliasesOut, 404: ErrorOut})
def list_model_aliases(request, model_name: str):
    """Where each alias points, whether a rollback is possible (and to which version), and the full history
    of alias changes, newest first."""
    model = _model(request, model_name)
    if model is None:
        return 404, NO_MODEL
    page = model_page(registered_model=model, history_limit=None)
    return 200, {"aliases": [_state_out(s) for s in page.aliases], "history": [_event_out(e) for e in page.history]}


@router.put("/{model_name}/aliases/{alias}", response={200: AliasChangeOut, 400: ErrorOut, 404: ErrorOut})
def set_model_alias(request, model_name: str, alias: str, payload: AliasSetIn):
    """Point `alias` at a version (in MLflow and here), moving it from where it pointed."""
    _require_write(request)
    model = _model(request, model_name)
    if model is None:
        return 404, NO_MODEL
    errors: dict[str, str] = {}
    try:
        alias = alias_clean(alias)
    except RegistryError as exc:
        errors["alias"] = str(exc)
    version = _version(model, payload.version)
    if version is None:
        errors["version"] = f"{model.name} has no version {payload.version}"
    if errors:
        return _refused(errors)
    try:
        event = alias_set(team=request.team, user=request.user, registered_model=model, alias=alias, version=version)
    except RegistryError as exc:
        return _refused({"alias": str(exc)})
    return 200, _alias_change(model, event)


@router.delete("/{model_name}/aliases/{alias}", response={200: AliasChangeOut, 400: ErrorOut, 404: ErrorOut})
def remove_model_alias(request, model_name: str, alias: str):
    """Demote: remove `alias` from the version it points at (a rollback puts it back)."""
    _require_write(request)
    model = _model(request, model_name)
    if model is None:
        return 404, NO_MODEL
    try:
        event = alias_remove(team=request.team, user=request.user, registered_model=model, alias=alias)
    except RegistryError as exc:
        return _refused({"alias": str(exc)})
    return 200, _alias_change(model, event)


@router.post("/{model_name}/aliases/{alias}/rollback", response={200: AliasChangeOut, 400: ErrorOut, 404: ErrorOut})
def rollback_model_alias(request, model_name: str, alias: str):
    """Point `alias` back at the version it had before its last change not undone yet; repeated rollbacks walk
    back through the history. 400 when there is nothing to roll back to."""
    _require_write(request)
    model = _model(request, model_name)
    if model is None:
        return 404, NO_MODEL
    try:
        event = alias_rollback(team=request.team, user=request.user, registered_model=model, alias=alias)
    except RegistryError as exc:
        return _refused({"alias": str(exc)})
    return 200, _alias_change(model, event)

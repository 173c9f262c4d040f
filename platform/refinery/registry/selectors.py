"""Reads for the registry pages: every one takes the team (or a model already fetched for it), and none
calls MLflow (aliases come from their mirror). Query counts do not grow with the number of versions."""

from __future__ import annotations

from dataclasses import dataclass, field

from django.db.models import Count, OuterRef, Prefetch, QuerySet, Subquery

from refinery.registry.models import (
    PROMOTABLE_KINDS,
    AliasEvent,
    GateDecision,
    ModelAlias,
    ModelVersion,
    RegisteredModel,
    rollback_target,
)
from refinery.runs.models import Run, StageRun, Status
from refinery.teams.models import Team

DEFAULT_ALIASES = ("staging", "production")
HISTORY_SHOWN = 50


def run_gate_decisions(*, run: Run) -> dict[int, GateDecision]:
    """The gate decisions of a run, by gate stage id (one query), with the models and reviewer they name."""
    return {
        d.stage_run_id: d
        for d in GateDecision.objects.filter(run=run).select_related(
            "candidate", "champion", "registered_model", "reviewed_by"
        )
    }


def registered_model_list(*, team: Team) -> list[RegisteredModel]:
    """The team's models, each with `version_count`, `latest` (its newest ModelVersion, run attached) and
    `alias_rows` (ModelAlias with their version): four queries, however many models and versions."""
    newest = ModelVersion.objects.filter(registered_model=OuterRef("pk")).order_by("-version").values("pk")[:1]
    aliases = ModelAlias.objects.select_related("version").only("registered_model_id", "alias", "version__version")
    models = list(
        RegisteredModel.objects.filter(team=team)
        .select_related("created_by")
        .annotate(version_count=Count("versions"), latest_id=Subquery(newest))
        .prefetch_related(Prefetch("aliases", queryset=aliases.order_by("alias"), to_attr="alias_rows"))
    )
    latest = {
        v.pk: v
        for v in ModelVersion.objects.filter(pk__in=[m.latest_id for m in models if m.latest_id])
        .select_related("run", "stage_run", "promoted_by")
        .defer("lineage", "run__snapshot", "stage_run__spec", "stage_run__log_tail", "stage_run__summary")
    }
    for model in models:
        model.latest = latest.get(model.latest_id)
    return models


def registered_model_get(*, team: Team, name: str) -> RegisteredModel:
    return RegisteredModel.objects.select_related("created_by").get(team=team, name=name)


def registered_model_choices(*, team: Team) -> QuerySet[RegisteredModel]:
    return RegisteredModel.objects.filter(team=team).only("id", "name", "description").order_by("name")


def pipeline_model_name(*, team: Team, pipeline_id: int | None) -> str | None:
    """The team's model that most recently got a version from this pipeline (the promote form's default)."""
    if pipeline_id is None:
        return None
    return (
        ModelVersion.objects.filter(registered_model__team=team, run__pipeline_id=pipeline_id)
        .order_by("-promoted_at", "-pk")
        .values_list("registered_model__name", flat=True)
        .first()
    )


def model_version_get(*, registered_model: RegisteredModel, version: int) -> ModelVersion:
    return ModelVersion.objects.get(registered_model=registered_model, version=version)


@dataclass
class AliasState:
    """One alias of a model: where it points now, and where a rollback would point it."""

    alias: str
    version: ModelVersion | None
    can_roll_back: bool
    rollback_to: ModelVersion | None


@dataclass
class ModelPage:
    model: RegisteredModel
    versions: list[ModelVersion]  # newest first, each with `alias_names` (sorted)
    aliases: list[AliasState]  # the default aliases, then every other alias that is set or has history
    history: list[AliasEvent]  # newest first, at most HISTORY_SHOWN
    history_total: int = 0
    alias_choices: list[str] = field(default_factory=list)  # known aliases, default ones first
    awaiting: list = field(default_factory=list)  # GateDecisions whose candidate waits for an owner's approval


def model_page(*, registered_model: RegisteredModel, history_limit: int | None = HISTORY_SHOWN) -> ModelPage:
    """Everything the model page shows, in three queries: versions (with run and promoter), the alias mirror,
    the alias history (with its versions and users). `history` keeps the newest `history_limit` events
    (None: all of them; the rollback states always read the whole history)."""
    model = registered_model
    versions = list(
        ModelVersion.objects.filter(registered_model=model)
        .select_related("run", "promoted_by")
        .defer("run__snapshot")
        .order_by("-version")
    )
    by_pk = {v.pk: v for v in versions}
    current: dict[str, ModelVersion] = {}
    for alias, version_id in (
        ModelAlias.objects.filter(registered_model=model).order_by("alias").values_list("alias", "version_id")
    ):
        current[alias] = by_pk.get(version_id)
    for version in versions:
        version.alias_names = sorted(a for a, v in current.items() if v is not None and v.pk == version.pk)
    events = list(
        AliasEvent.objects.filter(registered_model=model)
        .select_related("user", "gate__run", "gate__stage_run")
        .defer(
            "gate__numbers",
            "gate__run__snapshot",
            "gate__stage_run__spec",
            "gate__stage_run__log_tail",
            "gate__stage_run__summary",
            "gate__stage_run__outputs",
        )
        .order_by("at", "id")
    )
    for event in events:  # versions from the list above: no join, no extra query
        event.version_row = by_pk.get(event.version_id)
        event.previous_row = by_pk.get(event.previous_version_id)
        event.previous_version = event.previous_row  # what rollback_target reads, without a query
    by_alias: dict[str, list[AliasEvent]] = {}
    for event in events:
        by_alias.setdefault(event.alias, []).append(event)
    order = {alias: i for i, alias in enumerate(DEFAULT_ALIASES)}
    names = sorted(set(current) | set(by_alias) | set(DEFAULT_ALIASES), key=lambda a: (order.get(a, len(order)), a))
    states = []
    for alias in names:
        possible, target = rollback_target(by_alias.get(alias, []))
        states.append(AliasState(alias=alias, version=current.get(alias), can_roll_back=possible, rollback_to=target))
    choices = names
    awaiting = list(
        GateDecision.objects.filter(registered_model=model, outcome=GateDecision.Outcome.AWAITING_APPROVAL)
        .select_related("run", "stage_run", "candidate", "champion")
        .only(
            "message",
            "alias",
            "decided_at",
            "run__number",
            "stage_run__name",
            "candidate__version",
            "champion__version",
            "registered_model_id",
        )
        .order_by("-decided_at")
    )
    return ModelPage(
        model=model,
        versions=versions,
        aliases=states,
        awaiting=awaiting,
        history=events[::-1][:history_limit],
        history_total=len(events),
        alias_choices=choices,
    )


def promotable_stage_get(*, team: Team, run_number: int, stage_name: str) -> StageRun:
    """A stage of one of the team's runs, by run number and stage name (any state: the page says why a
    stage cannot be promoted)."""
    return StageRun.objects.select_related("run", "run__pipeline").get(
        run__team=team, run__number=run_number, name=stage_name
    )


def promotable_stages(*, team: Team, limit: int = 50) -> list[StageRun]:
    """The team's newest succeeded stages whose output is a model or an adapter."""
    return list(
        StageRun.objects.filter(run__team=team, status=Status.SUCCEEDED, outputs__kind__in=PROMOTABLE_KINDS)
        .select_related("run", "run__pipeline")
        .defer("run__snapshot", "log_tail", "spec")
        .order_by("-run__number", "index")[:limit]
    )


def stage_registrations(*, team: Team, stage_run: StageRun) -> list[ModelVersion]:
    """The versions already registered from this stage, in the team's models."""
    return list(
        ModelVersion.objects.filter(stage_run=stage_run, registered_model__team=team)
        .select_related("registered_model")
        .defer("lineage", "metrics")
        .order_by("registered_model__name")
    )


def run_stages(*, stage_run: StageRun) -> list[StageRun]:
    """All stages of a stage's run, in order (for the promote page's preview of metrics)."""
    return list(StageRun.objects.filter(run_id=stage_run.run_id).defer("log_tail").order_by("index"))

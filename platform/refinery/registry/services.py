"""Promote stage outputs into the MLflow Model Registry and move their aliases.

Every service checks everything it can in the database first, then, inside one transaction that holds the
registered model's row lock, calls MLflow and writes the rows. The lock orders concurrent changes of one
model, so MLflow's aliases and their mirror (ModelAlias) change in the same order.

Failure modes:
- MLflow refuses or cannot be reached: RegistryError with MLflow's reason, raised before any row is written;
  the transaction rolls back (a registered model row made for a new name goes too), nothing is saved.
- MLflow succeeded but the database write (or the commit) fails: the MLflow change is undone, best effort
  (the new version deleted, the alias put back where the mirror said it was), and the database error is
  raised. If the undo fails too (MLflow gone in between), MLflow keeps a version or an alias Refinery does
  not know: harmless for Refinery, whose pages read only its own rows; MLflow's version numbers only grow,
  so the next promotion gets a fresh number; an orphan version carries `refinery.*` tags naming its stage,
  and the warning in the log names it. An empty registered model left by a rolled-back first promotion
  is reused by the next one (creating it is idempotent).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

from django.db import IntegrityError, transaction
from django.utils import timezone

from refinery.registry.lineage import promotion_metrics, stage_lineage, version_tags
from refinery.registry.models import (
    PROMOTABLE_KINDS,
    AliasEvent,
    ModelAlias,
    ModelVersion,
    RegisteredModel,
    rollback_target,
)
from refinery.runs.models import StageRun, Status
from refinery.teams.models import Team
from refinery.teams.services import audit
from refinery.tracking import registry as mlflow_registry
from refinery.tracking.registry import RegistryBackendError

log = logging.getLogger(__name__)

MODEL_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}$")
ALIAS_RE = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
RESERVED_NAMES = frozenset({"promote"})  # /registry/promote/ is the promote page


class RegistryError(Exception):
    """A registry change cannot be made as asked; the message says why (and is safe to show)."""


def model_name_clean(name: str) -> str:
    name = (name or "").strip()
    if not name:
        raise RegistryError("give the model a name")
    if not MODEL_NAME_RE.match(name):
        raise RegistryError(
            f"model name {name!r}: use lowercase letters, digits, '.', '-' and '_' (at most 100, "
            "starting with a letter or digit)"
        )
    if name in RESERVED_NAMES:
        raise RegistryError(f"model name {name!r} is reserved; choose another")
    return name


def alias_clean(alias: str) -> str:
    alias = (alias or "").strip()
    if not alias:
        raise RegistryError("give the alias a name, e.g. staging or production")
    if not ALIAS_RE.match(alias):
        raise RegistryError(
            f"alias {alias!r}: use lowercase letters, digits, '-' and '_' (at most 64, starting "
            "with a letter), e.g. staging or production"
        )
    if alias == "latest" or re.fullmatch(r"v\d+", alias):
        raise RegistryError(f"alias {alias!r} is reserved by MLflow (latest and v<number> name versions)")
    return alias


def promotable_check(*, team: Team, stage_run: StageRun) -> None:
    """Refuse, with the reason, a stage that cannot be promoted: another team's, unfinished or failed, or one
    whose output is no model (an evaluation report)."""
    run = stage_run.run
    if run.team_id != team.pk:
        raise RegistryError("this stage does not belong to your team")
    where = f"run #{run.number} / {stage_run.name}"
    if stage_run.status != Status.SUCCEEDED:
        raise RegistryError(
            f"{where} has not succeeded (it is {stage_run.get_status_display().lower()}): only a "
            "succeeded stage's output can be promoted"
        )
    outputs = stage_run.outputs or {}
    kind = outputs.get("kind")
    if kind not in PROMOTABLE_KINDS:
        what = "an evaluation report" if kind == "report" else f"no model ({kind!r})"
        raise RegistryError(f"{where} produced {what}; only a model or an adapter can be promoted")
    if not outputs.get("mlflow_run_id") or not outputs.get("artifact_path"):
        raise RegistryError(f"{where} has no output in MLflow to register")


def _undo(steps: list[tuple[str, Callable[[], None]]]) -> None:
    for what, step in reversed(steps):
        try:
            step()
        except Exception as exc:  # noqa: BLE001 - best effort; the original error is what the caller sees
            log.warning("could not undo %s in MLflow after a failed database write: %s", what, exc)


def _locked(model: RegisteredModel) -> RegisteredModel:
    return RegisteredModel.objects.select_for_update().get(pk=model.pk)


def _alias_write(
    *,
    model: RegisteredModel,
    alias: str,
    version: ModelVersion | None,
    previous: ModelVersion | None,
    action: str,
    user,
    note: str = "",
    gate=None,
) -> AliasEvent:
    """The mirror row and the history row of one alias change (MLflow already changed)."""
    now = timezone.now()
    if version is None:
        ModelAlias.objects.filter(registered_model=model, alias=alias).delete()
    else:
        ModelAlias.objects.update_or_create(
            registered_model=model, alias=alias, defaults={"version": version, "updated_at": now}
        )
    return AliasEvent.objects.create(
        registered_model=model,
        alias=alias,
        version=version,
        previous_version=previous,
        action=action,
        user=user if user is not None and user.is_authenticated else None,
        at=now,
        note=note[:500],
        gate=gate,
    )


def _current(model: RegisteredModel, alias: str) -> ModelVersion | None:
    row = ModelAlias.objects.select_related("version").filter(registered_model=model, alias=alias).first()
    return row.version if row else None


def model_promote(
    *,
    team: Team,
    user,
    stage_run: StageRun,
    model_name: str,
    description: str = "",
    alias: str | None = None,
    note: str = "",
    gate=None,
) -> ModelVersion:
    """Register a succeeded stage's model or adapter as the next version of the team's model `model_name`
    (created on first use, with `description`), optionally pointing `alias` at it.

    The version's MLflow source is `runs:/<stage's MLflow run>/<artifact path>`; its metrics (the stage's
    summary and the evaluations of this output) and lineage (run, pipeline version, base model, datasets by
    sha256, the stage chain, code version, seed) are copied from the run now. A stage already registered in
    the same model is refused.
    """
    promotable_check(team=team, stage_run=stage_run)
    name = model_name_clean(model_name)
    alias = alias_clean(alias) if alias else None
    run = stage_run.run
    stages = list(StageRun.objects.filter(run=run).order_by("index"))
    lineage = stage_lineage(stage_run, run, stages)
    metrics = promotion_metrics(stage_run, stages)
    outputs = stage_run.outputs
    undo: list[tuple[str, Callable[[], None]]] = []
    try:
        with transaction.atomic():
            model = RegisteredModel.objects.select_for_update().filter(team=team, name=name).first()
            if model is None:
                try:
                    with transaction.atomic():
                        model = RegisteredModel.objects.create(
                            team=team,
                            name=name,
                            description=(description or "").strip(),
                            created_by=user,
                            mlflow_name=mlflow_registry.model_name(team=team, name=name),
                        )
                except IntegrityError:
                    raise RegistryError(f"model {name!r} was just created by someone else; try again") from None
            existing = model.versions.filter(stage_run=stage_run).values_list("version", flat=True).first()
            if existing is not None:
                raise RegistryError(f"run #{run.number} / {stage_run.name} is already version {existing} of {name}")
            previous = _current(model, alias) if alias else None
            try:
                mlflow_registry.registered_model_ensure(
                    mlflow_name=model.mlflow_name,
                    description=model.description,
                    tags={"refinery.team": team.slug, "refinery.name": name},
                )
                number = mlflow_registry.model_version_create(
                    mlflow_name=model.mlflow_name,
                    mlflow_run_id=outputs["mlflow_run_id"],
                    artifact_path=outputs["artifact_path"],
                    description=(description or "").strip(),
                    tags=version_tags(lineage=lineage, team=team, user=user, stage=stage_run),
                )
                undo.append(
                    (
                        f"version {number} of {model.mlflow_name}",
                        lambda: mlflow_registry.model_version_delete(mlflow_name=model.mlflow_name, version=number),
                    )
                )
                if alias:
                    mlflow_registry.alias_set(mlflow_name=model.mlflow_name, alias=alias, version=number)
                    undo.append(
                        (
                            f"alias {alias} of {model.mlflow_name}",
                            lambda: mlflow_registry.alias_restore(
                                mlflow_name=model.mlflow_name,
                                alias=alias,
                                version=previous.version if previous else None,
                            ),
                        )
                    )
            except RegistryBackendError as exc:
                raise RegistryError(str(exc)) from exc
            version = ModelVersion.objects.create(
                registered_model=model,
                version=number,
                stage_run=stage_run,
                run=run,
                mlflow_run_id=outputs["mlflow_run_id"],
                artifact_path=outputs["artifact_path"],
                kind=outputs["kind"],
                metrics=metrics,
                lineage=lineage,
                promoted_by=user if user is not None and user.is_authenticated else None,
            )
            if alias:
                _alias_write(
                    model=model,
                    alias=alias,
                    version=version,
                    previous=previous,
                    action=AliasEvent.Action.SET,
                    user=user,
                    note=note,
                    gate=gate,
                )
            audit(
                team=team,
                user=user,
                action="registry.promoted",
                target=f"{name} v{number}",
                run=run.number,
                stage=stage_run.name,
                alias=alias or "",
            )
    except BaseException:
        _undo(undo)
        raise
    return version


def _alias_change(
    *,
    team: Team,
    user,
    registered_model: RegisteredModel,
    alias: str,
    target: Callable[[RegisteredModel, ModelVersion | None], ModelVersion | None],
    action: str,
    note: str = "",
    gate=None,
) -> AliasEvent:
    """Move one alias: lock the model, decide the target from the current state (`target(model, current)`,
    None = remove), change MLflow, then the mirror and the history."""
    if registered_model.team_id != team.pk:
        raise RegistryError("this model does not belong to your team")
    undo: list[tuple[str, Callable[[], None]]] = []
    try:
        with transaction.atomic():
            model = _locked(registered_model)
            current = _current(model, alias)
            new = target(model, current)
            try:
                if new is None:
                    mlflow_registry.alias_delete(mlflow_name=model.mlflow_name, alias=alias)
                else:
                    mlflow_registry.alias_set(mlflow_name=model.mlflow_name, alias=alias, version=new.version)
            except RegistryBackendError as exc:
                raise RegistryError(str(exc)) from exc
            undo.append(
                (
                    f"alias {alias} of {model.mlflow_name}",
                    lambda: mlflow_registry.alias_restore(
                        mlflow_name=model.mlflow_name, alias=alias, version=current.version if current else None
                    ),
                )
            )
            event = _alias_write(
                model=model, alias=alias, version=new, previous=current, action=action, user=user, note=note, gate=gate
            )
            audit(
                team=team,
                user=user,
                action=f"registry.alias_{action}",
                target=f"{model.name}@{alias}",
                version=new.version if new else None,
                previous=current.version if current else None,
            )
    except BaseException:
        _undo(undo)
        raise
    return event


def alias_set(
    *, team: Team, user, registered_model: RegisteredModel, alias: str, version: ModelVersion, note: str = "", gate=None
) -> AliasEvent:
    """Point `alias` (e.g. staging, production) at `version`, moving it from where it pointed."""
    alias = alias_clean(alias)
    if version.registered_model_id != registered_model.pk:
        raise RegistryError(f"version {version.version} is not a version of {registered_model.name}")

    def target(model, current):
        if current is not None and current.pk == version.pk:
            raise RegistryError(f"{alias} already points at version {version.version}")
        return version

    return _alias_change(
        team=team,
        user=user,
        registered_model=registered_model,
        alias=alias,
        target=target,
        action=AliasEvent.Action.SET,
        note=note,
        gate=gate,
    )


def alias_remove(*, team: Team, user, registered_model: RegisteredModel, alias: str) -> AliasEvent:
    """Demote: remove `alias` from the version it points at (a rollback puts it back)."""
    alias = alias_clean(alias)

    def target(model, current):
        if current is None:
            raise RegistryError(f"{model.name} has no alias {alias!r}")
        return None

    return _alias_change(
        team=team,
        user=user,
        registered_model=registered_model,
        alias=alias,
        target=target,
        action=AliasEvent.Action.REMOVED,
    )


def alias_rollback(*, team: Team, user, registered_model: RegisteredModel, alias: str) -> AliasEvent:
    """Point `alias` back at the version it had before its last change (see models.rollback_target)."""
    alias = alias_clean(alias)

    def target(model, current):
        events = list(
            AliasEvent.objects.filter(registered_model=model, alias=alias)
            .select_related("previous_version")
            .order_by("at", "id")
        )
        possible, version = rollback_target(events)
        if not events:
            raise RegistryError(f"{alias} of {model.name} has never changed: there is nothing to roll back")
        if not possible:
            raise RegistryError(
                f"{alias} of {model.name} has no earlier version to roll back to"
                + (" (demote it instead)" if current is not None else "")
            )
        if current is not None and current.pk == version.pk:
            raise RegistryError(f"{alias} already points at version {version.version}")
        return version

    return _alias_change(
        team=team,
        user=user,
        registered_model=registered_model,
        alias=alias,
        target=target,
        action=AliasEvent.Action.ROLLED_BACK,
    )

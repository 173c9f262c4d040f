"""Promotion gates: what a gate stage's decision does to the registry (docs/schedules.md, "Promotion gates").

A gate stage (trainers/methods/gate.py) evaluates its candidate (the output of the stage it takes as input) and
the champion (the registered model alias's holder, resolved when the stage starts: `gate_champion`) on the same
held-out and retention data, and decides (trainers.gates.gate_decide). When the trainer has finished, the
worker's supervisor calls `gate_apply` before it marks the stage succeeded:

- the alias moved while the gate ran (another promotion, a rollback): **stale**, nothing changes (the candidate
  was not compared with the new holder);
- failed: **kept**; the champion stays, a "kept" entry goes into the alias history;
- passed, `require_approval`: the candidate is registered as a new version, **awaiting approval**; an owner
  approves (the alias moves: `gate_approve`) or rejects it (`gate_reject`);
- passed: the candidate is registered and the alias moves to it (**promoted**).

Every decision is one GateDecision row (one per gate stage: a retried stage finds it and does not decide
twice), an audit entry, an alias-history entry (when the model exists), MLflow tags on the gate stage's run,
the pipeline run and the version, and a notification (gate.promoted / gate.rejected / gate.awaiting_approval).
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from refinery.notifications.kinds import EventKind
from refinery.notifications.services import notify
from refinery.registry.models import AliasEvent, GateDecision, ModelAlias, ModelVersion, RegisteredModel
from refinery.registry.services import RegistryError, alias_clean, alias_set, model_name_clean, model_promote
from refinery.runs.models import StageRun
from refinery.teams.models import Membership
from refinery.teams.services import audit

log = logging.getLogger(__name__)

Outcome = GateDecision.Outcome
NOTIFY_KIND = {
    Outcome.PROMOTED: EventKind.GATE_PROMOTED,
    Outcome.APPROVED: EventKind.GATE_PROMOTED,
    Outcome.KEPT: EventKind.GATE_REJECTED,
    Outcome.REJECTED: EventKind.GATE_REJECTED,
    Outcome.STALE: EventKind.GATE_REJECTED,
    Outcome.AWAITING_APPROVAL: EventKind.GATE_AWAITING_APPROVAL,
}


class GateError(Exception):
    """A gate decision cannot be applied or reviewed as asked; the message says why (safe to show)."""


def alias_holder(*, team, model_name: str, alias: str) -> ModelVersion | None:
    """The version `model_name@alias` points at now (the mirror of MLflow's alias), or None."""
    row = (
        ModelAlias.objects.select_related("version__stage_run", "version__run")
        .filter(registered_model__team=team, registered_model__name=model_name, alias=alias)
        .first()
    )
    return row.version if row else None


def gate_champion(*, stage: StageRun) -> dict[str, Any] | None:
    """The champion a gate stage compares its candidate with, resolved when the stage starts: the holder of
    its config's `registered_model@alias`, as a host-independent model reference (jobs.stage_inputs
    downloads it from MLflow like a stage output), or None when the alias has no holder yet."""
    config = stage.spec.get("config") or {}
    holder = alias_holder(
        team=stage.run.team, model_name=config.get("registered_model", ""), alias=config.get("alias", "")
    )
    if holder is None:
        return None
    return {
        "version_id": holder.pk,
        "version": holder.version,
        "model": config["registered_model"],
        "alias": config["alias"],
        "run": holder.run.number,
        "stage": holder.stage_run.name,
        "ref": {
            "source": "stage",
            "stage": f"champion-v{holder.version}",
            "kind": holder.kind,
            "artifact_path": holder.artifact_path,
            "mlflow_run_id": holder.mlflow_run_id,
            "base": (holder.stage_run.outputs or {}).get("base"),
        },
    }


def _v(version: ModelVersion | None) -> str:
    return f"v{version.version}" if version is not None else "none"


def _payload(decision: GateDecision) -> dict[str, Any]:
    numbers = decision.numbers or {}
    return {
        "summary": f"Gate of run #{decision.run.number}: {decision.message}"[:1000],
        "gate": {
            "id": decision.pk,
            "outcome": decision.outcome,
            "passed": decision.passed,
            "message": decision.message,
            "model": decision.model_name,
            "alias": decision.alias,
            "candidate_stage": decision.candidate_stage,
            "candidate_version": decision.candidate.version if decision.candidate else None,
            "champion_version": decision.champion.version if decision.champion else None,
            "numbers": {
                k: numbers.get(k)
                for k in (
                    "metric",
                    "candidate",
                    "champion",
                    "gain",
                    "retention_metric",
                    "retention_candidate",
                    "retention_champion",
                    "forgetting",
                )
            },
            "reviewed_by": decision.reviewed_by.get_username() if decision.reviewed_by else None,
        },
        "run": {
            "number": decision.run.number,
            "name": decision.run.name,
            "path": reverse("runs:detail", kwargs={"number": decision.run.number}),
        },
    }


def _record(decision: GateDecision, *, user=None) -> None:
    """The audit entry and the notification of a decision's current outcome (inside its transaction)."""
    audit(
        team=decision.team,
        user=user,
        action=f"gate.{decision.outcome}",
        target=f"{decision.model_name}@{decision.alias}",
        run=decision.run.number,
        message=decision.message,
    )
    notify(team=decision.team_id, kind=NOTIFY_KIND[decision.outcome], payload=_payload(decision))


def gate_apply(*, stage_run_id: int, summary: dict, champion: dict | None) -> GateDecision:
    """Apply the decision a gate stage's trainer reported (`summary["gate"]`), once per stage: the decision
    already recorded for it is returned as it is. Raises GateError (nothing recorded) when the registry cannot
    be changed (MLflow unreachable, the candidate unusable)."""
    stage = StageRun.objects.select_related("run__team").get(pk=stage_run_id)
    existing = GateDecision.objects.filter(stage_run=stage).first()
    if existing is not None:
        return existing
    numbers = (summary or {}).get("gate")
    if not isinstance(numbers, dict) or "passed" not in numbers:
        raise GateError("the gate stage reported no decision")
    run, team = stage.run, stage.run.team
    config = stage.spec.get("config") or {}
    try:
        name, alias = model_name_clean(config.get("registered_model", "")), alias_clean(config.get("alias", ""))
    except RegistryError as exc:
        raise GateError(str(exc)) from None
    candidate_name = stage.spec.get("input") or "base"
    candidate_stage = StageRun.objects.filter(run=run, name=candidate_name).first()
    if candidate_stage is None:
        raise GateError(f"the gate's candidate stage {candidate_name!r} is not a stage of this run")
    passed = bool(numbers["passed"])
    reasons = "; ".join(numbers.get("reasons") or [])
    require_approval = bool(config.get("require_approval"))
    try:
        with transaction.atomic():
            model = RegisteredModel.objects.select_for_update().filter(team=team, name=name).first()
            current = (
                ModelAlias.objects.select_related("version").filter(registered_model=model, alias=alias).first()
                if model
                else None
            )
            current = current.version if current else None
            champion_row = ModelVersion.objects.filter(pk=champion["version_id"]).first() if champion else None
            decision = GateDecision(
                team=team,
                run=run,
                stage_run=stage,
                candidate_stage=candidate_name,
                model_name=name,
                alias=alias,
                registered_model=model,
                champion=champion_row,
                passed=passed,
                numbers=numbers,
                require_approval=require_approval,
                message="",
            )
            champion_id = champion["version_id"] if champion else None
            if (current.pk if current else None) != champion_id:
                was = f"v{champion['version']}" if champion else "no holder"
                decision.outcome = Outcome.STALE
                decision.message = (
                    f"not promoted: {alias} moved from {was} to {_v(current)} while the gate ran "
                    f"(the candidate was compared with {was}); run the gate again"
                )
                decision.save()
            elif not passed:
                decision.outcome = Outcome.KEPT
                decision.message = (
                    f"kept champion {_v(current)}: {reasons}"
                    if current is not None
                    else f"not promoted (no holder yet): {reasons}"
                )
                decision.save()
                if model is not None and current is not None:
                    AliasEvent.objects.create(
                        registered_model=model,
                        alias=alias,
                        version=current,
                        previous_version=current,
                        action=AliasEvent.Action.KEPT,
                        note=decision.message[:500],
                        gate=decision,
                    )
            else:
                decision.outcome = Outcome.AWAITING_APPROVAL if require_approval else Outcome.PROMOTED
                decision.save()
                version = model.versions.filter(stage_run=candidate_stage).first() if model is not None else None
                if version is None:
                    version = model_promote(
                        team=team,
                        user=None,
                        stage_run=candidate_stage,
                        model_name=name,
                        description=f"run #{run.number} / {candidate_name}, gate {stage.name}",
                        alias=None if require_approval else alias,
                        gate=decision,
                    )
                elif not require_approval:
                    alias_set(team=team, user=None, registered_model=model, alias=alias, version=version, gate=decision)
                decision.candidate = version
                decision.registered_model = version.registered_model
                if require_approval:
                    decision.message = f"{_v(version)} awaits approval for {alias} (holder: {_v(current)}): {reasons}"
                else:
                    over = f" over {_v(current)}" if current is not None else " (no holder yet)"
                    decision.message = f"promoted {_v(version)} to {alias}{over}: {reasons}"
                decision.save()
                AliasEvent.objects.filter(gate=decision).update(note=decision.message[:500])
            _record(decision)
    except RegistryError as exc:
        raise GateError(f"could not apply the gate's decision: {exc}") from exc
    _tag_in_mlflow(decision)
    return decision


def _tag_in_mlflow(decision: GateDecision) -> None:
    """The decision as tags on the gate stage's MLflow run, the pipeline run and the registered version (best
    effort: the database row is the record; MLflow mirrors it)."""
    from refinery.tracking import registry as mlflow_registry
    from refinery.tracking.runs import run_tags_set

    tags = {
        "refinery.gate.outcome": decision.outcome,
        "refinery.gate.message": decision.message,
        "refinery.gate.model": decision.model_name,
        "refinery.gate.alias": decision.alias,
        "refinery.gate.champion_version": decision.champion.version if decision.champion else "",
        "refinery.gate.candidate_version": decision.candidate.version if decision.candidate else "",
    }
    try:
        if decision.stage_run.mlflow_run_id:
            run_tags_set(mlflow_run_id=decision.stage_run.mlflow_run_id, tags=tags)
        if decision.run.mlflow_run_id:
            run_tags_set(
                mlflow_run_id=decision.run.mlflow_run_id,
                tags={f"{k}.{decision.stage_run.name}": v for k, v in tags.items()},
            )
        if decision.candidate is not None:
            mlflow_registry.model_version_tags_set(
                mlflow_name=decision.candidate.registered_model.mlflow_name,
                version=decision.candidate.version,
                tags=tags,
            )
    except Exception as exc:  # noqa: BLE001 - a mirror: the decision stands without its tags
        log.warning("gate decision %s: could not tag it in MLflow: %s", decision.pk, exc)


def _owner_check(decision: GateDecision, user) -> None:
    if not Membership.objects.filter(team=decision.team, user=user, role=Membership.Role.OWNER).exists():
        raise GateError("only an owner of the team can approve or reject a candidate")
    if decision.outcome != Outcome.AWAITING_APPROVAL:
        raise GateError(f"this candidate is not awaiting approval (it is {decision.get_outcome_display().lower()})")


def gate_approve(*, decision: GateDecision, user, note: str = "") -> GateDecision:
    """An owner approves a candidate awaiting approval: the alias moves to it, unless the alias moved since
    the gate compared the candidate with its holder (then it is refused: run the gate again)."""
    with transaction.atomic():
        decision = (
            GateDecision.objects.select_for_update(of=("self",))
            .select_related("candidate", "champion", "run")
            .get(pk=decision.pk)
        )
        _owner_check(decision, user)
        if decision.registered_model_id is None or decision.candidate is None:
            raise GateError(f"the candidate's version of {decision.model_name} was deleted: nothing to approve")
        model = RegisteredModel.objects.select_for_update().get(pk=decision.registered_model_id)
        current = ModelAlias.objects.filter(registered_model=model, alias=decision.alias).first()
        current_id = current.version_id if current else None
        if current_id != decision.champion_id:
            now = f"v{current.version.version}" if current else "no holder"
            raise GateError(
                f"{decision.alias} points at {now} now, not at {_v(decision.champion)} which the "
                "candidate was compared with: approving would replace a version it was not compared "
                "with; run the gate again"
            )
        decision.outcome = Outcome.APPROVED
        decision.reviewed_by, decision.reviewed_at, decision.review_note = user, timezone.now(), note.strip()[:500]
        decision.message = (
            f"approved by {user.get_username()}: promoted {_v(decision.candidate)} to "
            f"{decision.alias}" + (f" over {_v(decision.champion)}" if decision.champion else "")
        )
        decision.save()
        try:
            alias_set(
                team=decision.team,
                user=user,
                registered_model=model,
                alias=decision.alias,
                version=decision.candidate,
                note=decision.message,
                gate=decision,
            )
        except RegistryError as exc:
            raise GateError(str(exc)) from exc
        _record(decision, user=user)
    _tag_in_mlflow(decision)
    return decision


def gate_reject(*, decision: GateDecision, user, note: str = "") -> GateDecision:
    """An owner rejects a candidate awaiting approval: the holder stays (a "kept" history entry); the
    candidate's version stays registered, without the alias."""
    with transaction.atomic():
        decision = (
            GateDecision.objects.select_for_update(of=("self",))
            .select_related("candidate", "champion", "run")
            .get(pk=decision.pk)
        )
        _owner_check(decision, user)
        decision.outcome = Outcome.REJECTED
        decision.reviewed_by, decision.reviewed_at, decision.review_note = user, timezone.now(), note.strip()[:500]
        decision.message = (
            f"rejected by {user.get_username()}: {_v(decision.candidate)} not promoted to "
            f"{decision.alias}"
            + (f"; kept {_v(decision.champion)}" if decision.champion else "")
            + (f" ({decision.review_note})" if decision.review_note else "")
        )
        decision.save()
        current = ModelAlias.objects.filter(
            registered_model_id=decision.registered_model_id, alias=decision.alias
        ).first()
        if current is not None:
            AliasEvent.objects.create(
                registered_model_id=decision.registered_model_id,
                alias=decision.alias,
                version_id=current.version_id,
                previous_version_id=current.version_id,
                action=AliasEvent.Action.KEPT,
                user=user,
                note=decision.message[:500],
                gate=decision,
            )
        _record(decision, user=user)
    _tag_in_mlflow(decision)
    return decision

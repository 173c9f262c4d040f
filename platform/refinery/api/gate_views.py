"""/api/v1/gates: the decisions of the team's promotion gates, and an owner's approval or rejection of a
candidate awaiting approval (docs/schedules.md, "Promotion gates").

Lookups stay inside the token's team (another team's decision answers 404); approving and rejecting need an
owner with a read-write token (403 otherwise); a decision that cannot be reviewed as asked is 400."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from ninja import Router, Schema
from ninja.errors import HttpError

from refinery.api.schemas import ErrorOut, In
from refinery.registry.gates import GateError, gate_approve, gate_reject
from refinery.registry.models import GateDecision
from refinery.teams.models import Membership
from refinery.teams.selectors import membership_get

router = Router(tags=["gates"])


class GateOut(Schema):
    id: int
    run: int
    stage: str
    candidate_stage: str
    model: str
    alias: str
    outcome: str
    passed: bool
    message: str
    candidate_version: int | None
    champion_version: int | None
    require_approval: bool
    numbers: dict[str, Any]
    decided_at: datetime
    reviewed_by: str | None
    reviewed_at: datetime | None
    review_note: str


class ReviewIn(In):
    note: str = ""


def _out(d: GateDecision) -> dict:
    return {
        "id": d.pk,
        "run": d.run.number,
        "stage": d.stage_run.name,
        "candidate_stage": d.candidate_stage,
        "model": d.model_name,
        "alias": d.alias,
        "outcome": d.outcome,
        "passed": d.passed,
        "message": d.message,
        "candidate_version": d.candidate.version if d.candidate else None,
        "champion_version": d.champion.version if d.champion else None,
        "require_approval": d.require_approval,
        "numbers": d.numbers or {},
        "decided_at": d.decided_at,
        "reviewed_by": d.reviewed_by.get_username() if d.reviewed_by else None,
        "reviewed_at": d.reviewed_at,
        "review_note": d.review_note,
    }


def _decisions(request):
    return (
        GateDecision.objects.filter(team=request.team)
        .select_related("run", "stage_run", "candidate", "champion", "reviewed_by")
        .defer("run__snapshot", "stage_run__spec", "stage_run__log_tail", "stage_run__summary")
    )


def _get(request, gate_id: int) -> GateDecision | None:
    if not 0 < gate_id < 2**63:
        return None
    return _decisions(request).filter(pk=gate_id).first()


def _not_found(gate_id: int):
    return 404, {"detail": f"gate decision #{gate_id} not found in this team"}


@router.get("", response=list[GateOut])
def list_gates(
    request,
    run: int | None = None,
    outcome: Literal[tuple(GateDecision.Outcome.values)] | None = None,
    limit: int = 100,
):
    """The team's gate decisions, newest first; `run` (a run number) and `outcome` (e.g. awaiting_approval)
    filter them."""
    found = _decisions(request)
    if run is not None:
        found = found.filter(run__number=run)
    if outcome:
        found = found.filter(outcome=outcome)
    return [_out(d) for d in found[: max(1, min(limit, 500))]]


@router.get("/{int:gate_id}", response={200: GateOut, 404: ErrorOut})
def get_gate(request, gate_id: int):
    decision = _get(request, gate_id)
    return (200, _out(decision)) if decision else _not_found(gate_id)


def _review(request, gate_id: int, payload: ReviewIn, action):
    from refinery.api.views import _require_write

    _require_write(request)
    decision = _get(request, gate_id)
    if decision is None:
        return _not_found(gate_id)
    membership = membership_get(team=request.team, user=request.user)
    if membership is None or membership.role != Membership.Role.OWNER:
        raise HttpError(403, "only an owner of the team can approve or reject a candidate")
    try:
        action(decision=decision, user=request.user, note=payload.note)
    except GateError as exc:
        return 400, {"detail": str(exc), "errors": {"gate": str(exc)}}
    return 200, _out(_get(request, gate_id))


@router.post("/{int:gate_id}/approve", response={200: GateOut, 400: ErrorOut, 404: ErrorOut})
def approve_gate(request, gate_id: int, payload: ReviewIn):
    """Approve a candidate awaiting approval: the alias moves to its version (refused when the alias moved
    since the gate compared the candidate with its holder)."""
    return _review(request, gate_id, payload, gate_approve)


@router.post("/{int:gate_id}/reject", response={200: GateOut, 400: ErrorOut, 404: ErrorOut})
def reject_gate(request, gate_id: int, payload: ReviewIn):
    """Reject a candidate awaiting approval: the holder stays; the candidate's version stays registered."""
    return _review(request, gate_id, payload, gate_reject)

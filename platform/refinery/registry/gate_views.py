"""Approve or reject a candidate a gate left awaiting approval (owners only), from the run page's gate card."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import redirect
from django.urls import reverse
from django.views.decorators.http import require_POST

from refinery.core.auth import team_required
from refinery.registry.gates import GateError, gate_approve, gate_reject
from refinery.registry.models import GateDecision
from refinery.teams.models import Membership
from refinery.teams.selectors import membership_get


def _decision_or_404(request, number: int, stage: str) -> GateDecision:
    decision = (
        GateDecision.objects.select_related("run", "candidate", "champion")
        .filter(team=request.team, run__number=number, stage_run__name=stage)
        .first()
    )
    if decision is None:
        raise Http404("no gate decision for this stage in this team")
    return decision


def _review(request, number: int, stage: str, action):
    decision = _decision_or_404(request, number, stage)
    membership = membership_get(team=request.team, user=request.user)
    if membership is None or membership.role != Membership.Role.OWNER:
        raise PermissionDenied("only an owner of the team can approve or reject a candidate")
    try:
        decision = action(decision=decision, user=request.user, note=request.POST.get("note", ""))
    except GateError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, decision.message[:300])
    return redirect(reverse("runs:detail", kwargs={"number": number}) + f"#gate-{stage}")


@require_POST
@team_required(write=True)
def gate_approve_view(request, number: int, stage: str):
    return _review(request, number, stage, gate_approve)


@require_POST
@team_required(write=True)
def gate_reject_view(request, number: int, stage: str):
    return _review(request, number, stage, gate_reject)

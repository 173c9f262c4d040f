"""Invitations: an owner makes an expiring, single-use link; whoever opens it signed in (or signs up)
joins the team with the invitation's role. Only the key's sha256 is stored."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from refinery.teams.models import Invitation, Membership, Team
from refinery.teams.services import TeamError, audit

STATE_MESSAGES = {
    Invitation.State.ACCEPTED: "This invitation link has already been used. Ask a team owner for a new one.",
    Invitation.State.REVOKED: "This invitation was revoked by a team owner. Ask them for a new one.",
    Invitation.State.EXPIRED: "This invitation link has expired. Ask a team owner for a new one.",
}
UNKNOWN = "This invitation link is not valid. Check that you copied all of it, or ask a team owner for a new one."


def invitation_list(*, team: Team) -> QuerySet[Invitation]:
    return Invitation.objects.filter(team=team).select_related("created_by", "accepted_by").order_by("-created_at")


def invitation_get_by_pk(*, team: Team, pk) -> Invitation:
    return Invitation.objects.get(team=team, pk=pk)


def invitation_get_by_key(*, key: str) -> Invitation | None:
    if not key or len(key) > 200:
        return None
    return Invitation.objects.select_related("team", "created_by").filter(key_hash=Invitation.hash_key(key)).first()


@transaction.atomic
def invitation_create(
    *, team: Team, actor, role: str, email: str = "", days: int | None = None
) -> tuple[Invitation, str]:
    """An invitation and its plain key (put in the link shown once; never stored)."""
    if not Membership.objects.filter(team=team, user=actor, role=Membership.Role.OWNER).exists():
        raise TeamError("only an owner of this team can invite people")
    if role not in Membership.Role.values:
        raise TeamError(f"unknown role {role!r}: choose owner, member or viewer")
    days = settings.REFINERY_INVITATION_DAYS if days is None else days
    if not 1 <= days <= 90:
        raise TeamError("an invitation is valid for 1 to 90 days")
    key = Invitation.generate_key()
    invitation = Invitation.objects.create(
        team=team,
        role=role,
        email=(email or "").strip(),
        key_hash=Invitation.hash_key(key),
        created_by=actor,
        expires_at=timezone.now() + timedelta(days=days),
    )
    audit(
        team=team,
        user=actor,
        action="invitation.created",
        target=invitation.email or f"invitation #{invitation.pk}",
        role=role,
        expires=invitation.expires_at.date().isoformat(),
    )
    return invitation, key


@transaction.atomic
def invitation_revoke(*, team: Team, actor, invitation: Invitation) -> Invitation:
    if invitation.team_id != team.pk:
        raise TeamError("this invitation is not one of this team's")
    if not Membership.objects.filter(team=team, user=actor, role=Membership.Role.OWNER).exists():
        raise TeamError("only an owner of this team can revoke invitations")
    invitation = Invitation.objects.select_for_update().get(pk=invitation.pk)
    if not invitation.is_pending:
        raise TeamError(f"this invitation is already {invitation.state}")
    invitation.revoked_at = timezone.now()
    invitation.save(update_fields=["revoked_at"])
    audit(
        team=team,
        user=actor,
        action="invitation.revoked",
        target=invitation.email or f"invitation #{invitation.pk}",
        role=invitation.role,
    )
    return invitation


@transaction.atomic
def invitation_accept(*, invitation: Invitation, user) -> Membership:
    """Use the invitation: `user` joins its team with its role. Single use; refused once expired or revoked,
    and for someone who already belongs to the team (their role stays as it is)."""
    invitation = Invitation.objects.select_for_update().select_related("team").get(pk=invitation.pk)
    if not invitation.is_pending:
        raise TeamError(STATE_MESSAGES[invitation.state])
    team = invitation.team
    if Membership.objects.filter(team=team, user=user).exists():
        raise TeamError(f"you are already a member of {team.name}; this link stays unused")
    membership = Membership.objects.create(team=team, user=user, role=invitation.role)
    invitation.accepted_by, invitation.accepted_at = user, timezone.now()
    invitation.save(update_fields=["accepted_by", "accepted_at"])
    audit(
        team=team,
        user=user,
        action="invitation.accepted",
        target=user.get_username(),
        role=invitation.role,
        invitation=invitation.pk,
    )
    return membership

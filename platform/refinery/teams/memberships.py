"""Membership administration: role changes, removal, leaving. A team always keeps at least one owner.

Every write locks all of the team's membership rows first (`select_for_update`), so two concurrent
demotions or removals of the team's last two owners are serialised: the second sees the first's result
and is refused."""

from __future__ import annotations

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from refinery.teams.models import ApiToken, Membership, Team
from refinery.teams.services import TeamError, audit

Role = Membership.Role
LAST_OWNER = "a team keeps at least one owner: make someone else an owner first"


def membership_list(*, team: Team) -> QuerySet[Membership]:
    return Membership.objects.filter(team=team).select_related("user").order_by("user__username")


def membership_get_by_pk(*, team: Team, pk) -> Membership:
    """One membership of `team`; Membership.DoesNotExist for another team's (the caller answers 404)."""
    return Membership.objects.select_related("user").get(team=team, pk=pk)


def is_owner(*, team: Team | None, user) -> bool:
    if team is None or not getattr(user, "is_authenticated", False):
        return False
    return Membership.objects.filter(team=team, user=user, role=Role.OWNER).exists()


def _lock(team: Team, membership: Membership) -> tuple[Membership, int]:
    """Lock every membership row of the team; return the fresh target row and the number of owners."""
    rows = list(Membership.objects.select_for_update().filter(team=team).order_by("pk"))
    target = next((m for m in rows if m.pk == membership.pk), None)
    if target is None:
        raise TeamError("this person is no longer a member of the team")
    return target, sum(1 for m in rows if m.role == Role.OWNER)


def _require_owner(team: Team, actor) -> None:
    if not Membership.objects.filter(team=team, user=actor, role=Role.OWNER).exists():
        raise TeamError("only an owner of this team can change its members")


@transaction.atomic
def membership_role_change(*, team: Team, actor, membership: Membership, role: str) -> Membership:
    """Give a member another role (owner, member, viewer). Only owners may; the last owner cannot be demoted."""
    if role not in Role.values:
        raise TeamError(f"unknown role {role!r}: choose owner, member or viewer")
    if membership.team_id != team.pk:
        raise TeamError("this person is not a member of this team")
    target, owners = _lock(team, membership)
    _require_owner(team, actor)
    if target.role == role:
        return target
    if target.role == Role.OWNER and owners <= 1:
        raise TeamError(LAST_OWNER)
    previous = target.role
    target.role = role
    target.save(update_fields=["role"])
    audit(
        team=team,
        user=actor,
        action="member.role_changed",
        target=target.user.get_username(),
        role=role,
        previous=previous,
    )
    return target


def _end(team: Team, target: Membership) -> None:
    ApiToken.objects.filter(team=team, user=target.user, revoked_at__isnull=True).update(revoked_at=timezone.now())
    target.delete()


@transaction.atomic
def membership_remove(*, team: Team, actor, membership: Membership) -> None:
    """Remove a member (owners only). Their tokens for this team are revoked. The last owner stays."""
    if membership.team_id != team.pk:
        raise TeamError("this person is not a member of this team")
    target, owners = _lock(team, membership)
    _require_owner(team, actor)
    if target.user_id == actor.pk:
        raise TeamError("to leave the team yourself, use 'Leave team'")
    if target.role == Role.OWNER and owners <= 1:
        raise TeamError(LAST_OWNER)
    username = target.user.get_username()
    role = target.role
    _end(team, target)
    audit(team=team, user=actor, action="member.removed", target=username, role=role)


@transaction.atomic
def membership_leave(*, team: Team, user) -> None:
    """Leave a team. The last owner cannot leave (make someone else an owner first)."""
    membership = Membership.objects.filter(team=team, user=user).first()
    if membership is None:
        raise TeamError("you are not a member of this team")
    target, owners = _lock(team, membership)
    if target.role == Role.OWNER and owners <= 1:
        raise TeamError("you are this team's last owner: make someone else an owner before you leave")
    role = target.role
    _end(team, target)
    audit(team=team, user=user, action="member.left", target=user.get_username(), role=role)

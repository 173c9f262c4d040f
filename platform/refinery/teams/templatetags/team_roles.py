"""`{% load team_roles %}{% if request|is_team_owner %}`: the user's role in the current team, for links and
buttons only (the views check again)."""

from __future__ import annotations

from django import template

from refinery.teams.models import Membership
from refinery.teams.selectors import membership_get

register = template.Library()


def _membership(request) -> Membership | None:
    user, team = getattr(request, "user", None), getattr(request, "team", None)
    if user is None or not user.is_authenticated or not team:
        return None
    return membership_get(team=team, user=user)


@register.filter
def is_team_owner(request) -> bool:
    membership = _membership(request)
    return membership is not None and membership.role == Membership.Role.OWNER


@register.filter
def can_write_team(request) -> bool:
    """Whether the user may change things in the current team (owner or member, not viewer)."""
    membership = _membership(request)
    return membership is not None and membership.can_write

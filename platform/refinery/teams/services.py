from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils.text import slugify

from refinery.teams.models import ApiToken, AuditEvent, Membership, Team


@transaction.atomic
def team_create(*, name: str, owner) -> Team:
    team = Team.objects.create(name=name, slug=slugify(name) or "team")
    Membership.objects.create(team=team, user=owner, role=Membership.Role.OWNER)
    return team


@transaction.atomic
def membership_add(*, team: Team, user, role: str = Membership.Role.MEMBER) -> Membership:
    membership, _ = Membership.objects.update_or_create(team=team, user=user, defaults={"role": role})
    return membership


@transaction.atomic
def api_token_create(*, user, team: Team | None = None, name: str = "cli") -> tuple[ApiToken, str]:
    """Create a token and return it with its plain key (shown once, never stored)."""
    if team is None:
        team = Team.objects.filter(memberships__user=user).order_by("name").first()
        if team is None:
            raise ValueError(f"user {user.username!r} belongs to no team")
    elif not Membership.objects.filter(team=team, user=user).exists():
        raise ValueError(f"user {user.username!r} is not a member of team {team.name!r}")
    key = ApiToken.generate_key()
    token = ApiToken.objects.create(
        user=user, team=team, name=name, key_hash=ApiToken.hash_key(key), key_prefix=key[:8]
    )
    return token, key


def audit(*, team: Team, user, action: str, target: str, **detail) -> AuditEvent:
    return AuditEvent.objects.create(team=team, user=user if user and user.is_authenticated else None,
                                     action=action, target=target, detail=detail)


@transaction.atomic
def user_create(*, username: str, password: str, team_name: str | None = None, email: str = ""):
    User = get_user_model()
    user = User.objects.create_user(username=username, password=password, email=email)
    if team_name:
        team = Team.objects.filter(name=team_name).first()
        if team is None:
            team_create(name=team_name, owner=user)
        else:
            membership_add(team=team, user=user)
    return user

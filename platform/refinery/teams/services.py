from __future__ import annotations

from datetime import datetime

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from refinery.teams.models import ApiToken, AuditEvent, Membership, Team


class TeamError(ValueError):
    """A team administration request that is refused; the message says why, for the user."""


def _free_slug(name: str) -> str:
    base = (slugify(name) or "team")[:90]
    slug, n = base, 1
    while Team.objects.filter(slug=slug).exists():
        n += 1
        slug = f"{base}-{n}"
    return slug


@transaction.atomic
def team_create(*, name: str, owner) -> Team:
    """A new team with `owner` as its first owner (any signed-in user may create one)."""
    name = " ".join((name or "").split())
    if not name:
        raise TeamError("a team needs a name")
    if len(name) > 100:
        raise TeamError("a team name has at most 100 characters")
    if Team.objects.filter(name__iexact=name).exists():
        raise TeamError(f"a team named {name!r} already exists; choose another name")
    team = Team.objects.create(name=name, slug=_free_slug(name), created_by=owner)
    Membership.objects.create(team=team, user=owner, role=Membership.Role.OWNER)
    audit(team=team, user=owner, action="team.created", target=name)
    return team


@transaction.atomic
def membership_add(*, team: Team, user, role: str = Membership.Role.MEMBER) -> Membership:
    membership, _ = Membership.objects.update_or_create(team=team, user=user, defaults={"role": role})
    return membership


@transaction.atomic
def api_token_create(
    *,
    user,
    team: Team | None = None,
    name: str = "cli",
    scope: str = ApiToken.Scope.WRITE,
    expires_at: datetime | None = None,
) -> tuple[ApiToken, str]:
    """Create a token and return it with its plain key (shown once, never stored). `scope` "read" allows only
    GET/HEAD/OPTIONS; `expires_at` None means no expiry."""
    if scope not in ApiToken.Scope.values:
        raise ValueError(f"scope must be one of {', '.join(ApiToken.Scope.values)}, not {scope!r}")
    if expires_at is not None and expires_at <= timezone.now():
        raise ValueError("the expiry must be in the future")
    name = (name or "").strip() or "cli"
    if len(name) > 100:
        raise ValueError("a token name has at most 100 characters")
    if team is None:
        team = Team.objects.filter(memberships__user=user).order_by("name").first()
        if team is None:
            raise ValueError(f"user {user.username!r} belongs to no team")
    elif not Membership.objects.filter(team=team, user=user).exists():
        raise ValueError(f"user {user.username!r} is not a member of team {team.name!r}")
    key = ApiToken.generate_key()
    token = ApiToken.objects.create(
        user=user,
        team=team,
        name=name,
        key_hash=ApiToken.hash_key(key),
        key_prefix=key[:8],
        scope=scope,
        expires_at=expires_at,
    )
    audit(
        team=team,
        user=user,
        action="token.created",
        target=f"{name} ({token.key_prefix}…)",
        scope=scope,
        expires=expires_at.date().isoformat() if expires_at else "never",
    )
    return token, key


def audit(*, team: Team, user, action: str, target: str, **detail) -> AuditEvent:
    return AuditEvent.objects.create(
        team=team, user=user if user and user.is_authenticated else None, action=action, target=target, detail=detail
    )


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

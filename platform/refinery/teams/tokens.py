"""API tokens in the UI and the API: each user manages their own tokens in a team; owners see and revoke all."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from refinery.teams.models import ApiToken, Membership, Team
from refinery.teams.services import TeamError, audit

# Expiry choices offered in the UI and accepted by the API (days; 0 = never expires).
EXPIRY_DAYS = (30, 90, 365, 0)


def allowed_expiry_days() -> tuple[int, ...]:
    """EXPIRY_DAYS within REFINERY_API_TOKEN_MAX_DAYS (0 there: no maximum, tokens may never expire)."""
    limit = settings.REFINERY_API_TOKEN_MAX_DAYS
    if not limit:
        return EXPIRY_DAYS
    return tuple(d for d in EXPIRY_DAYS if d and d <= limit) or (limit,)


def expiry_from_days(days: int) -> datetime | None:
    if days not in allowed_expiry_days():
        choices = ", ".join("never" if d == 0 else str(d) for d in allowed_expiry_days())
        raise TeamError(f"choose an expiry of {choices} days")
    return timezone.now() + timedelta(days=days) if days else None


def api_token_list(*, team: Team, user, everyone: bool = False) -> QuerySet[ApiToken]:
    """The user's tokens in `team`, or every token of the team when `everyone` (owners)."""
    tokens = ApiToken.objects.filter(team=team).select_related("user").order_by("-created_at")
    return tokens if everyone else tokens.filter(user=user)


def api_token_get_for(*, team: Team, user, pk) -> ApiToken:
    """A token the user may manage: their own in this team, or any of the team's for an owner.
    ApiToken.DoesNotExist otherwise (the caller answers 404)."""
    tokens = ApiToken.objects.filter(team=team).select_related("user")
    if not Membership.objects.filter(team=team, user=user, role=Membership.Role.OWNER).exists():
        tokens = tokens.filter(user=user)
    return tokens.get(pk=pk)


@transaction.atomic
def api_token_revoke(*, token: ApiToken, actor) -> ApiToken:
    token = ApiToken.objects.select_for_update().select_related("user", "team").get(pk=token.pk)
    if (
        token.user_id != actor.pk
        and not Membership.objects.filter(team=token.team, user=actor, role=Membership.Role.OWNER).exists()
    ):
        raise TeamError("only the token's owner or a team owner can revoke it")
    if token.revoked_at is not None:
        raise TeamError("this token is already revoked")
    token.revoked_at = timezone.now()
    token.save(update_fields=["revoked_at"])
    audit(
        team=token.team,
        user=actor,
        action="token.revoked",
        target=f"{token.name} ({token.key_prefix}…)",
        owner=token.user.get_username(),
    )
    return token

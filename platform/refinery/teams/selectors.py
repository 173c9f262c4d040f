from __future__ import annotations

from django.db.models import Q, QuerySet
from django.utils import timezone

from refinery.teams.models import ApiToken, Membership, Team

SESSION_KEY = "refinery_team_id"


def team_list(*, user) -> QuerySet[Team]:
    if not user.is_authenticated:
        return Team.objects.none()
    return Team.objects.filter(memberships__user=user)


def current_team_for(request) -> Team | None:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return None
    teams = team_list(user=user)
    chosen = request.session.get(SESSION_KEY) if hasattr(request, "session") else None
    if chosen:
        team = teams.filter(pk=chosen).first()
        if team:
            return team
    return teams.order_by("name").first()


def membership_get(*, team: Team, user) -> Membership | None:
    return Membership.objects.filter(team=team, user=user).first()


def api_token_authenticate(*, key: str) -> ApiToken | None:
    token = (
        ApiToken.objects.select_related("user", "team")
        .filter(key_hash=ApiToken.hash_key(key), revoked_at__isnull=True, user__is_active=True)
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=timezone.now()))
        .first()
    )
    if token is None or not Membership.objects.filter(team=token.team, user=token.user).exists():
        return None
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=timezone.now())
    return token

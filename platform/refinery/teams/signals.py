"""Sign-ins and failed sign-ins go to the audit logs of the user's teams (with the client's address).

A failed sign-in for a username nobody has is recorded nowhere team-scoped: there is no team to tell,
and recording it would let anyone write into a team's log."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.dispatch import receiver

from refinery.teams.models import Team
from refinery.teams.services import audit


def client_ip(request) -> str:
    """REMOTE_ADDR (a proxy in front sets it via its own configuration; X-Forwarded-For is not trusted)."""
    return (getattr(request, "META", {}) or {}).get("REMOTE_ADDR", "") if request is not None else ""


@receiver(user_logged_in, dispatch_uid="refinery.teams.audit_login")
def _audit_login(sender, request, user, **kwargs):
    for team in Team.objects.filter(memberships__user=user):
        audit(team=team, user=user, action="auth.login", target=user.get_username(), ip=client_ip(request))


@receiver(user_login_failed, dispatch_uid="refinery.teams.audit_login_failed")
def _audit_login_failed(sender, credentials, request=None, **kwargs):
    User = get_user_model()
    username = (credentials or {}).get(User.USERNAME_FIELD) or (credentials or {}).get("username")
    if not username or not isinstance(username, str):
        return
    user = User.objects.filter(**{User.USERNAME_FIELD: username}).first()
    if user is None:
        return
    for team in Team.objects.filter(memberships__user=user):
        audit(team=team, user=user, action="auth.login_failed", target=user.get_username(), ip=client_ip(request))

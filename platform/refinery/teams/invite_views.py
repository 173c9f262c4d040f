"""The invitation link: /teams/join/<key>/. Open to anyone holding the link: a signed-in user accepts it,
someone without an account signs up (username + password, Django's password validators) and joins at once."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.db import transaction
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from refinery.teams.forms import SignUpForm
from refinery.teams.invitations import STATE_MESSAGES, UNKNOWN, invitation_accept, invitation_get_by_key
from refinery.teams.selectors import SESSION_KEY
from refinery.teams.services import TeamError


def _password_backend() -> str:
    backends = settings.AUTHENTICATION_BACKENDS
    model = "django.contrib.auth.backends.ModelBackend"
    return model if model in backends else backends[-1]


def _joined(request, membership):
    request.session[SESSION_KEY] = membership.team_id
    messages.success(
        request, f"Welcome to {membership.team.name}: you joined as {membership.get_role_display().lower()}."
    )
    return redirect("teams:members", team_id=membership.team_id)


@require_http_methods(["GET", "POST"])
def invitation_view(request, key: str):
    invitation = invitation_get_by_key(key=key)
    if invitation is None:
        return render(request, "teams/invitation.html", {"problem": UNKNOWN}, status=404)
    if not invitation.is_pending:
        return render(
            request,
            "teams/invitation.html",
            {"problem": STATE_MESSAGES[invitation.state], "invitation": invitation},
            status=410,
        )
    context = {"invitation": invitation, "team": invitation.team}
    if request.user.is_authenticated:
        if request.method == "POST":
            try:
                membership = invitation_accept(invitation=invitation, user=request.user)
            except TeamError as exc:
                messages.error(request, str(exc))
                return redirect(request.path)
            return _joined(request, membership)
        return render(request, "teams/invitation.html", context)
    form = SignUpForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        try:
            with transaction.atomic():
                user = form.save()
                membership = invitation_accept(invitation=invitation, user=user)
        except TeamError as exc:
            form.add_error(None, str(exc))
        else:
            login(request, user, backend=_password_backend())
            return _joined(request, membership)
    return render(
        request, "teams/invitation.html", {**context, "form": form}, status=400 if request.method == "POST" else 200
    )

"""The team's secrets page (owners only): set, replace or delete the hub token. Write-only: the page shows
who set it, when, and its last four characters, never the value."""

from __future__ import annotations

from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect

from refinery.core.auth import team_required
from refinery.teams.models import Membership, TeamSecret
from refinery.teams.selectors import membership_get
from refinery.teams.team_secrets import TeamSecretError, team_secret_delete, team_secret_list, team_secret_set


def _require_owner(request) -> None:
    """Non-owners get the same 404 as for anything else they cannot reach."""
    membership = membership_get(team=request.team, user=request.user)
    if membership is None or membership.role != Membership.Role.OWNER:
        raise Http404("no such page")


def _rows(team) -> list[dict]:
    stored = {s.name: s for s in team_secret_list(team=team)}
    return [{"name": name, "label": label, "secret": stored.get(name)} for name, label in TeamSecret.Name.choices]


@never_cache
@require_http_methods(["GET", "POST"])
@team_required
def team_secrets_view(request):
    _require_owner(request)
    error, status = {}, 200
    if request.method == "POST":
        name = request.POST.get("name", "")
        try:
            secret = team_secret_set(
                team=request.team, user=request.user, name=name, value=request.POST.get("value", "")
            )
        except TeamSecretError as exc:
            error, status = {"name": name, "message": str(exc)}, 400
        else:
            messages.success(request, f"Saved the team's {secret.get_name_display()} (ends with …{secret.last4}).")
            return redirect("team-secrets")
    return render(
        request,
        "teams/secrets.html",
        {
            "rows": _rows(request.team),
            "error": error,
            "team": request.team,
            "is_owner": True,
            "nav": "teams",
            "tab": "secrets",
        },
        status=status,
    )


@require_POST
@team_required
def team_secret_delete_view(request, name: str):
    _require_owner(request)
    if name not in TeamSecret.Name.values:
        raise Http404("no such secret")
    if team_secret_delete(team=request.team, user=request.user, name=name):
        messages.success(request, f"Deleted the team's {TeamSecret.Name(name).label}.")
    if request.htmx:  # the confirmed htmx form: reload the page
        return HttpResponseClientRedirect(reverse("team-secrets"))
    return redirect("team-secrets")

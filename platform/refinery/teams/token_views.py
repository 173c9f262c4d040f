"""API tokens of the current team: yours (create, shown once; revoke), and for owners every member's."""

from __future__ import annotations

from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from refinery.core.auth import team_required
from refinery.teams.forms import TokenForm
from refinery.teams.memberships import is_owner
from refinery.teams.models import ApiToken, Membership
from refinery.teams.selectors import membership_get
from refinery.teams.services import TeamError, api_token_create
from refinery.teams.tokens import api_token_get_for, api_token_list, api_token_revoke, expiry_from_days


def _render(request, form, *, created=None, status=200):
    owner = is_owner(team=request.team, user=request.user)
    return render(
        request,
        "teams/tokens.html",
        {
            "form": form,
            "created": created,
            "is_owner": owner,
            "tokens": api_token_list(team=request.team, user=request.user),
            "team_tokens": api_token_list(team=request.team, user=request.user, everyone=True).exclude(
                user=request.user
            )
            if owner
            else None,
            "team": request.team,
            "nav": "teams",
            "tab": "tokens",
        },
        status=status,
    )


@require_GET
@team_required
def token_list_view(request):
    return _render(request, TokenForm())


@require_POST
@team_required
def token_create_view(request):
    """Create a token; its key is in this response only (only its sha256 is kept)."""
    form = TokenForm(request.POST)
    if form.is_valid():
        scope = form.cleaned_data["scope"]
        membership = membership_get(team=request.team, user=request.user)
        try:
            if scope == ApiToken.Scope.WRITE and membership.role == Membership.Role.VIEWER:
                raise TeamError("viewers can create read-only tokens only")
            token, key = api_token_create(
                user=request.user,
                team=request.team,
                name=form.cleaned_data["name"],
                scope=scope,
                expires_at=expiry_from_days(form.cleaned_data["expires_days"]),
            )
        except (TeamError, ValueError) as exc:
            form.add_error(None, str(exc))
        else:
            return _render(request, TokenForm(), created={"token": token, "key": key})
    return _render(request, form, status=400)


@require_POST
@team_required
def token_revoke_view(request, token_id: int):
    try:
        token = api_token_get_for(team=request.team, user=request.user, pk=token_id)
    except ApiToken.DoesNotExist:
        raise Http404("no such token") from None
    try:
        api_token_revoke(token=token, actor=request.user)
    except TeamError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Token {token.name} ({token.key_prefix}…) revoked: it no longer works.")
    return redirect("teams:tokens")

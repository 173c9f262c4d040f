"""Members of one team: roles (changed inline with htmx), removal, leaving, invitations (owners).

The team comes from the URL and must be one of the user's teams (404 otherwise); every member sees the
list, only owners change it (403 for members and viewers, as other write views answer viewers)."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseClientRedirect

from refinery.teams.forms import InvitationForm, RoleForm
from refinery.teams.invitations import invitation_create, invitation_get_by_pk, invitation_list, invitation_revoke
from refinery.teams.memberships import (
    membership_get_by_pk,
    membership_leave,
    membership_list,
    membership_remove,
    membership_role_change,
)
from refinery.teams.models import Invitation, Membership, Team
from refinery.teams.selectors import membership_get, team_list
from refinery.teams.services import TeamError


def _back(request, name: str, **kwargs):
    """A redirect after a write: htmx (buttons with hx-confirm) navigates the whole page there."""
    url = reverse(name, kwargs=kwargs)
    return HttpResponseClientRedirect(url) if request.htmx else redirect(url)


def team_for(request, team_id: int) -> tuple[Team, Membership]:
    """The user's team `team_id` and their membership in it; 404 for any other team."""
    team = team_list(user=request.user).filter(pk=team_id).first()
    if team is None:
        raise Http404("no such team")
    return team, membership_get(team=team, user=request.user)


def _owner_team(request, team_id: int) -> Team:
    team, me = team_for(request, team_id)
    if me.role != Membership.Role.OWNER:
        raise PermissionDenied("only owners of this team can change its members")
    return team


def _context(request, team: Team, me: Membership, **extra) -> dict:
    owner = me.role == Membership.Role.OWNER
    return {
        "team": team,
        "me": me,
        "is_owner": owner,
        "members": membership_list(team=team),
        "roles": Membership.Role.choices,
        "invitations": invitation_list(team=team)[:50] if owner else [],
        "invite_form": InvitationForm(),
        "invitation_days": settings.REFINERY_INVITATION_DAYS,
        "nav": "teams",
        "tab": "members",
        **extra,
    }


@require_GET
@login_required
def team_members_view(request, team_id: int):
    team, me = team_for(request, team_id)
    return render(request, "teams/members.html", _context(request, team, me))


@require_POST
@login_required
def member_role_view(request, team_id: int, membership_id: int):
    """Change one member's role. htmx: the member's row again (with the refusal in it, status 400)."""
    team = _owner_team(request, team_id)
    try:
        membership = membership_get_by_pk(team=team, pk=membership_id)
    except Membership.DoesNotExist:
        raise Http404("no such member in this team") from None
    form = RoleForm(request.POST)
    error, status = "", 200
    if not form.is_valid():
        error, status = "choose owner, member or viewer", 400
    else:
        try:
            membership = membership_role_change(
                team=team, actor=request.user, membership=membership, role=form.cleaned_data["role"]
            )
        except TeamError as exc:
            error, status = str(exc), 400
            membership.refresh_from_db()
    if request.htmx:
        me = membership_get(team=team, user=request.user)
        return render(
            request,
            "teams/members.html#member-row",
            {
                "m": membership,
                "team": team,
                "me": me,
                "is_owner": me and me.role == Membership.Role.OWNER,
                "roles": Membership.Role.choices,
                "row_error": error,
                "row_saved": not error,
            },
            status=status,
        )
    if error:
        messages.error(request, error)
    else:
        messages.success(request, f"{membership.user.get_username()} is now {membership.get_role_display().lower()}.")
    return _back(request, "teams:members", team_id=team.pk)


@require_POST
@login_required
def member_remove_view(request, team_id: int, membership_id: int):
    team = _owner_team(request, team_id)
    try:
        membership = membership_get_by_pk(team=team, pk=membership_id)
    except Membership.DoesNotExist:
        raise Http404("no such member in this team") from None
    try:
        membership_remove(team=team, actor=request.user, membership=membership)
    except TeamError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(
            request,
            f"{membership.user.get_username()} was removed from {team.name}; their API tokens for it are revoked.",
        )
    return _back(request, "teams:members", team_id=team.pk)


@require_POST
@login_required
def team_leave_view(request, team_id: int):
    team, _ = team_for(request, team_id)
    try:
        membership_leave(team=team, user=request.user)
    except TeamError as exc:
        messages.error(request, str(exc))
        return _back(request, "teams:members", team_id=team.pk)
    messages.success(request, f"You left {team.name}.")
    return _back(request, "teams:list")


@require_POST
@login_required
def invitation_create_view(request, team_id: int):
    """Create an invitation and show its link, once, in this response (it is not stored)."""
    team = _owner_team(request, team_id)
    me = membership_get(team=team, user=request.user)
    form = InvitationForm(request.POST)
    link, status = None, 400
    if form.is_valid():
        try:
            invitation, key = invitation_create(
                team=team, actor=request.user, role=form.cleaned_data["role"], email=form.cleaned_data["email"]
            )
        except TeamError as exc:
            form.add_error(None, str(exc))
        else:
            link = {
                "url": request.build_absolute_uri(reverse("teams:invitation", args=[key])),
                "invitation": invitation,
            }
            form, status = InvitationForm(), 200
    context = _context(request, team, me, invite_form=form, invite_link=link)
    template = "teams/members.html#invite-card" if request.htmx else "teams/members.html"
    return render(request, template, context, status=status)


@require_POST
@login_required
def invitation_revoke_view(request, team_id: int, invitation_id: int):
    team = _owner_team(request, team_id)
    try:
        invitation = invitation_get_by_pk(team=team, pk=invitation_id)
    except Invitation.DoesNotExist:
        raise Http404("no such invitation in this team") from None
    try:
        invitation_revoke(team=team, actor=request.user, invitation=invitation)
    except TeamError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, "Invitation revoked: its link no longer works.")
    return _back(request, "teams:members", team_id=team.pk)

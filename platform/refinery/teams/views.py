"""Team switcher and the "Teams" page (your teams, create a team). Members, tokens, invitations and the
audit log have their own view modules."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Count
from django.http import Http404
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from refinery.teams.forms import TeamCreateForm
from refinery.teams.models import Membership
from refinery.teams.selectors import SESSION_KEY, team_list
from refinery.teams.services import TeamError, team_create


@require_POST
def team_switch_view(request):
    if not request.user.is_authenticated:
        return redirect("login")
    raw = request.POST.get("team", "")
    team = team_list(user=request.user).filter(pk=raw).first() if raw.isdigit() else None  # "abc" was a 500
    if team is None:
        raise Http404("no such team")
    request.session[SESSION_KEY] = team.pk
    target = request.POST.get("next") or "/"
    if not url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        target = "/"
    return redirect(target)


def _render_list(request, form, status=200):
    memberships = (
        Membership.objects.filter(user=request.user)
        .select_related("team")
        .annotate(member_count=Count("team__memberships"))
        .order_by("team__name")
    )
    return render(
        request,
        "teams/list.html",
        {"memberships": memberships, "form": form, "nav": "teams", "tab": "teams"},
        status=status,
    )


@require_GET
@login_required
def team_list_view(request):
    return _render_list(request, TeamCreateForm())


@require_POST
@login_required
def team_create_view(request):
    form = TeamCreateForm(request.POST)
    if form.is_valid():
        try:
            team = team_create(name=form.cleaned_data["name"], owner=request.user)
        except TeamError as exc:
            form.add_error("name", str(exc))
        else:
            request.session[SESSION_KEY] = team.pk
            messages.success(request, f"Team {team.name} created; you are its owner.")
            return redirect("teams:members", team_id=team.pk)
    return _render_list(request, form, status=400)

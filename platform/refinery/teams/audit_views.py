"""The team's audit log, for its owners (404 for everyone else: members and viewers do not learn it exists)."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404
from django.shortcuts import render
from django.views.decorators.http import require_GET

from refinery.teams.audit_log import action_label, audit_event_list, audit_filter_choices, detail_text
from refinery.teams.member_views import team_for
from refinery.teams.models import Membership


@require_GET
@login_required
def audit_view(request, team_id: int):
    team, me = team_for(request, team_id)
    if me.role != Membership.Role.OWNER:
        raise Http404("no such page")
    action = request.GET.get("action") or None
    try:
        user_id = int(request.GET.get("user") or 0) or None
    except ValueError:
        user_id = None
    page = Paginator(
        audit_event_list(team=team, action=action, user_id=user_id), settings.REFINERY_AUDIT_PAGE_SIZE
    ).get_page(request.GET.get("page"))
    for event in page:
        event.label, event.text = action_label(event.action), detail_text(event.detail)
    actions, users = audit_filter_choices(team=team)
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "teams/audit.html",
        {
            "team": team,
            "is_owner": True,
            "page": page,
            "actions": actions,
            "users": users,
            "action": action or "",
            "user_id": user_id,
            "query": query.urlencode(),
            "nav": "teams",
            "tab": "audit",
        },
    )

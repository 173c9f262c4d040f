"""The team's quotas and usage, read-only (an operator sets them: admin or `manage.py team_quota`)."""

from __future__ import annotations

from django.shortcuts import render
from django.views.decorators.http import require_GET

from refinery.core.auth import team_required
from refinery.teams.models import Membership
from refinery.teams.quotas import quota_rows
from refinery.teams.selectors import membership_get


@require_GET
@team_required
def team_quota_view(request):
    membership = membership_get(team=request.team, user=request.user)
    return render(
        request,
        "teams/quota.html",
        {
            "rows": quota_rows(team=request.team),
            "team": request.team,
            "nav": "teams",
            "tab": "quota",
            "is_owner": membership is not None and membership.role == Membership.Role.OWNER,
        },
    )

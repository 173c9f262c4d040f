"""The team's quotas and usage, read-only (an operator sets them: admin or `manage.py team_quota`)."""
from __future__ import annotations

from django.shortcuts import render
from django.views.decorators.http import require_GET

from refinery.core.auth import team_required
from refinery.teams.quotas import quota_rows


@require_GET
@team_required
def team_quota_view(request):
    return render(request, "teams/quota.html", {"rows": quota_rows(team=request.team), "team": request.team})

from __future__ import annotations

from django.utils.functional import SimpleLazyObject

from refinery.teams.selectors import current_team_for


class CurrentTeamMiddleware:
    """Sets request.team: the team chosen in the session, else the user's first team."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request.team = SimpleLazyObject(lambda: current_team_for(request))
        return self.get_response(request)

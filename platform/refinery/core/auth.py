"""Team-scoped access for views: every page works inside the user's current team."""

from __future__ import annotations

from functools import wraps

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.shortcuts import render

from refinery.teams.selectors import membership_get


def team_required(view=None, *, write: bool = False):
    """Require a logged-in user with a current team; `write` also requires a non-viewer role."""

    def decorator(func):
        @wraps(func)
        def wrapper(request, *args, **kwargs):
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            if not request.team:
                return render(request, "no_team.html", status=403)
            if write:
                membership = membership_get(team=request.team, user=request.user)
                if membership is None or not membership.can_write:
                    raise PermissionDenied("viewers cannot change anything in this team")
            return func(request, *args, **kwargs)

        return wrapper

    return decorator(view) if view is not None else decorator

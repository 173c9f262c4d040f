from refinery.teams.selectors import team_list


def teams(request):
    """The user's teams, for the sidebar's team switcher."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    return {"user_teams": list(team_list(user=user).order_by("name"))}

from django import template

from refinery.core.units import format_bytes
from refinery.teams.quotas import team_limits, team_usage

register = template.Library()


@register.inclusion_tag("teams/_storage_usage.html")
def storage_usage(team):
    """ "Storage 1.2 GiB of 50 GiB" for the datasets list, linking to the quota page."""
    limit = team_limits(team=team).storage_bytes
    used = team_usage(team=team).storage_bytes
    return {
        "used": format_bytes(used),
        "limit": None if limit is None else format_bytes(limit),
        "full": limit is not None and used >= limit,
    }

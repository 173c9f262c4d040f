from django.http import Http404
from django.shortcuts import redirect
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from refinery.teams.selectors import SESSION_KEY, team_list


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

"""The team's notification endpoints (owners only; to anyone else these pages do not exist): list and
create (a webhook's secret is shown once), one endpoint's delivery log, redeliver, send a test event,
delete. Everything is looked up inside the current team."""

from __future__ import annotations

from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect

from refinery.core.auth import team_required
from refinery.notifications.forms import EndpointForm
from refinery.notifications.models import Delivery, Endpoint
from refinery.notifications.selectors import delivery_get, delivery_list, endpoint_get, endpoint_list
from refinery.notifications.services import (
    NotificationError,
    delivery_redeliver,
    endpoint_active_set,
    endpoint_create,
    endpoint_delete,
    endpoint_send_test,
)
from refinery.teams.memberships import is_owner

LOG_ROWS = 100


def _require_owner(request) -> None:
    """Non-owners get the same 404 as for anything else they cannot reach."""
    if not is_owner(team=request.team, user=request.user):
        raise Http404("no such page")


def _endpoint(request, pk: int) -> Endpoint:
    _require_owner(request)
    try:
        return endpoint_get(team=request.team, pk=pk)
    except Endpoint.DoesNotExist:
        raise Http404("no such endpoint in this team") from None


def _context(request, **extra) -> dict:
    return {"team": request.team, "is_owner": True, "nav": "teams", "tab": "webhooks", **extra}


@never_cache
@require_http_methods(["GET", "POST"])
@team_required
def webhook_list_view(request):
    _require_owner(request)
    form, created, status = EndpointForm(), None, 200
    if request.method == "POST":
        form = EndpointForm(request.POST)
        if form.is_valid():
            data = form.cleaned_data
            try:
                endpoint, secret = endpoint_create(
                    team=request.team,
                    user=request.user,
                    type=data["type"],
                    url=data["url"],
                    addresses=data["addresses"],
                    kinds=data["kinds"],
                )
            except NotificationError as exc:
                form.add_error("url" if data["type"] == Endpoint.Type.WEBHOOK else "addresses", str(exc))
            else:
                created, form = {"endpoint": endpoint, "secret": secret}, EndpointForm()
        if created is None:
            status = 400
    return render(
        request,
        "notifications/webhooks.html",
        _context(request, form=form, created=created, endpoints=endpoint_list(team=request.team)),
        status=status,
    )


@never_cache
@require_GET
@team_required
def webhook_detail_view(request, pk: int):
    endpoint = _endpoint(request, pk)
    return render(
        request,
        "notifications/webhook_detail.html",
        _context(request, endpoint=endpoint, deliveries=delivery_list(endpoint=endpoint)[:LOG_ROWS]),
    )


@require_POST
@team_required
def webhook_test_view(request, pk: int):
    endpoint = _endpoint(request, pk)
    endpoint_send_test(endpoint=endpoint, user=request.user)
    messages.success(request, "Test event queued: it appears in the delivery log below once sent.")
    return redirect("notifications:detail", pk=endpoint.pk)


@require_POST
@team_required
def webhook_active_view(request, pk: int):
    """Pause (active=0) or resume (active=1) the endpoint."""
    endpoint = _endpoint(request, pk)
    active = request.POST.get("active") == "1"
    endpoint_active_set(endpoint=endpoint, user=request.user, active=active)
    messages.success(
        request,
        "Endpoint resumed: pending attempts are sent again."
        if active
        else "Endpoint paused: it gets no new events; pending attempts wait until it is resumed.",
    )
    return redirect("notifications:detail", pk=endpoint.pk)


@require_POST
@team_required
def webhook_delete_view(request, pk: int):
    endpoint = _endpoint(request, pk)
    target = endpoint.target
    endpoint_delete(endpoint=endpoint, user=request.user)
    messages.success(request, f"Deleted the endpoint {target}.")
    if request.htmx:  # the confirmed htmx form: load the list as a page
        return HttpResponseClientRedirect(reverse("notifications:list"))
    return redirect("notifications:list")


@require_POST
@team_required
def delivery_redeliver_view(request, pk: int, delivery_id: int):
    endpoint = _endpoint(request, pk)
    try:
        delivery = delivery_get(endpoint=endpoint, pk=delivery_id)
    except Delivery.DoesNotExist:
        raise Http404("no such delivery of this endpoint") from None
    again = delivery_redeliver(delivery=delivery)
    messages.success(request, f"Redelivery of event #{delivery.event_id} queued (attempt {again.attempt}).")
    return redirect("notifications:detail", pk=endpoint.pk)

"""Reads, always inside one team."""

from __future__ import annotations

from django.db.models import QuerySet

from refinery.notifications.models import Delivery, Endpoint
from refinery.teams.models import Team


def endpoint_list(*, team: Team) -> QuerySet[Endpoint]:
    return Endpoint.objects.filter(team=team).defer("secret_ciphertext")


def endpoint_get(*, team: Team, pk: int) -> Endpoint:
    """The team's endpoint `pk`; Endpoint.DoesNotExist for any other team's."""
    return Endpoint.objects.get(team=team, pk=pk)


def delivery_list(*, endpoint: Endpoint) -> QuerySet[Delivery]:
    return Delivery.objects.filter(endpoint=endpoint).select_related("event").order_by("-created_at", "-id")


def delivery_get(*, endpoint: Endpoint, pk: int) -> Delivery:
    return Delivery.objects.select_related("event", "endpoint").get(endpoint=endpoint, pk=pk)

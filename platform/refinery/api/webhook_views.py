"""/api/v1/webhooks: the team's notification endpoints (signed webhooks, email), owners only.

POST creates one and returns its signing secret once (stored encrypted, never returned again); GET lists
them; DELETE removes one; POST .../test queues a test event; GET .../deliveries is the delivery log; POST
.../deliveries/{id}/redeliver queues the same event again. Members and viewers get 403; another team's
endpoint or delivery answers 404."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from ninja import Router, Schema
from pydantic import Field

from refinery.api.schemas import ErrorOut, In
from refinery.notifications.models import Delivery, Endpoint
from refinery.notifications.selectors import delivery_get, delivery_list, endpoint_list
from refinery.notifications.services import (
    NotificationError,
    delivery_redeliver,
    endpoint_create,
    endpoint_delete,
    endpoint_send_test,
)
from refinery.teams.memberships import is_owner

router = Router(tags=["webhooks"])
OWNERS_ONLY = {"detail": "only an owner of this team can manage its webhooks"}
NO_ENDPOINT = {"detail": "no such webhook endpoint in this team"}


class EndpointIn(In):
    type: Literal["webhook", "email"] = "webhook"
    url: str = Field("", max_length=2000, description="webhook: the http(s) URL to POST to")
    addresses: list[str] = Field(default_factory=list, max_length=20, description="email: the recipients")
    kinds: list[str] | None = Field(
        None, max_length=20, description="event kinds; default: every kind but run.succeeded (opt-in)"
    )


class EndpointOut(Schema):
    id: int
    type: str
    url: str
    addresses: list[str]
    kinds: list[str]
    active: bool
    secret_ends_with: str
    created_at: datetime
    created_by: str | None


class EndpointCreatedOut(EndpointOut):
    secret: str = Field(description="the signing secret (webhooks), shown in this response only")


class DeliveryOut(Schema):
    id: int
    event_id: int
    kind: str
    attempt: int
    manual: bool
    status: str
    status_code: int | None
    response_ms: int | None
    error: str
    next_attempt_at: datetime | None
    delivered_at: datetime | None
    created_at: datetime


def _endpoint_out(e: Endpoint) -> dict:
    return {
        "id": e.pk,
        "type": e.type,
        "url": e.url,
        "addresses": e.addresses,
        "kinds": e.kinds,
        "active": e.active,
        "secret_ends_with": e.secret_last4,
        "created_at": e.created_at,
        "created_by": getattr(e.created_by, "username", None),
    }


def _delivery_out(d: Delivery) -> dict:
    return {
        "id": d.pk,
        "event_id": d.event_id,
        "kind": d.event.kind,
        "attempt": d.attempt,
        "manual": d.manual,
        "status": d.status,
        "status_code": d.status_code,
        "response_ms": d.response_ms,
        "error": d.error,
        "next_attempt_at": d.next_attempt_at,
        "delivered_at": d.delivered_at,
        "created_at": d.created_at,
    }


def _owner(request) -> bool:
    return is_owner(team=request.team, user=request.user)


def _find(request, webhook_id: int) -> Endpoint | None:
    return endpoint_list(team=request.team).select_related("created_by").filter(pk=webhook_id).first()


@router.get("", response={200: list[EndpointOut], 403: ErrorOut})
def list_webhooks(request):
    if not _owner(request):
        return 403, OWNERS_ONLY
    return 200, [_endpoint_out(e) for e in endpoint_list(team=request.team).select_related("created_by")]


@router.post("", response={201: EndpointCreatedOut, 400: ErrorOut, 403: ErrorOut})
def create_webhook(request, payload: EndpointIn):
    """A webhook (`url`) or an email endpoint (`addresses`). URLs must be http(s) and resolve to public
    addresses (unless the operator allows private ones). The response holds the signing secret, once."""
    if not _owner(request):
        return 403, OWNERS_ONLY
    try:
        endpoint, secret = endpoint_create(
            team=request.team,
            user=request.user,
            type=payload.type,
            url=payload.url,
            addresses=payload.addresses,
            kinds=payload.kinds,
        )
    except NotificationError as exc:
        return 400, {"detail": str(exc)}
    return 201, {**_endpoint_out(endpoint), "secret": secret}


@router.delete("/{webhook_id}", response={204: None, 403: ErrorOut, 404: ErrorOut})
def delete_webhook(request, webhook_id: int):
    if not _owner(request):
        return 403, OWNERS_ONLY
    endpoint = _find(request, webhook_id)
    if endpoint is None:
        return 404, NO_ENDPOINT
    endpoint_delete(endpoint=endpoint, user=request.user)
    return 204, None


@router.post("/{webhook_id}/test", response={202: DeliveryOut, 403: ErrorOut, 404: ErrorOut})
def test_webhook(request, webhook_id: int):
    """Queue a `test` event to this endpoint only; its outcome appears in the delivery log."""
    if not _owner(request):
        return 403, OWNERS_ONLY
    endpoint = _find(request, webhook_id)
    if endpoint is None:
        return 404, NO_ENDPOINT
    return 202, _delivery_out(endpoint_send_test(endpoint=endpoint, user=request.user))


@router.get("/{webhook_id}/deliveries", response={200: list[DeliveryOut], 403: ErrorOut, 404: ErrorOut})
def list_deliveries(request, webhook_id: int, limit: int = 100):
    """The delivery log, newest first: one row per attempt (at most `limit`, 1 to 1000)."""
    limit = max(1, min(limit, 1000))
    if not _owner(request):
        return 403, OWNERS_ONLY
    endpoint = _find(request, webhook_id)
    if endpoint is None:
        return 404, NO_ENDPOINT
    return 200, [_delivery_out(d) for d in delivery_list(endpoint=endpoint)[:limit]]


@router.post(
    "/{webhook_id}/deliveries/{delivery_id}/redeliver", response={202: DeliveryOut, 403: ErrorOut, 404: ErrorOut}
)
def redeliver(request, webhook_id: int, delivery_id: int):
    """Queue the delivery's event to the same endpoint again (a new attempt)."""
    if not _owner(request):
        return 403, OWNERS_ONLY
    endpoint = _find(request, webhook_id)
    if endpoint is None:
        return 404, NO_ENDPOINT
    try:
        delivery = delivery_get(endpoint=endpoint, pk=delivery_id)
    except Delivery.DoesNotExist:
        return 404, {"detail": "no such delivery of this endpoint"}
    return 202, _delivery_out(delivery_redeliver(delivery=delivery))

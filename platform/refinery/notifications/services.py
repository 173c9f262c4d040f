"""Notification services: the outbox (`notify`), endpoints, and delivery with retries.

`notify` inserts the event and one pending Delivery per subscribed endpoint inside the caller's
transaction, and asks for a worker after commit. The worker (`deliveries_send_due`) claims due rows with
SELECT ... FOR UPDATE SKIP LOCKED, one at a time, sends each outside any transaction, and records the
outcome; a failed attempt schedules the next one (a new row) after the backoff in
REFINERY_WEBHOOK_BACKOFF_SECONDS, until REFINERY_WEBHOOK_MAX_ATTEMPTS."""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
from datetime import timedelta

from cryptography.fernet import InvalidToken
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.core.validators import validate_email
from django.db import transaction
from django.utils import timezone

from refinery.notifications.dispatch import enqueue_delivery_on_commit
from refinery.notifications.kinds import DEFAULT_KINDS, SUBSCRIBABLE, EventKind
from refinery.notifications.models import Delivery, Endpoint, NotificationEvent
from refinery.notifications.signing import signature_compute
from refinery.notifications.urlcheck import WebhookUrlError, webhook_url_check
from refinery.teams.models import Team
from refinery.teams.services import audit
from refinery.teams.team_secrets import secrets_cipher

log = logging.getLogger(__name__)
MAX_ADDRESSES = 20
MAX_ENDPOINTS_PER_TEAM = 50
RESPONSE_BYTES_KEPT = 1024
DELIVERY_BATCH = 100  # attempts one task sends before it hands over to a fresh task


class NotificationError(Exception):
    """A refused endpoint or action; the message says why."""


# --- the outbox ---------------------------------------------------------------------------------


def notify(*, team: Team | int, kind: str, payload: dict) -> NotificationEvent:
    """Record an event in the caller's transaction and queue its deliveries (sent after commit)."""
    kind = EventKind(kind)
    team_id = team.pk if isinstance(team, Team) else team
    with transaction.atomic():
        event = NotificationEvent.objects.create(team_id=team_id, kind=kind, payload=payload)
        endpoints = [
            e for e in Endpoint.objects.filter(team_id=team_id, active=True).only("id", "kinds") if kind in e.kinds
        ]
        _deliveries_create(event, endpoints)
    return event


def _deliveries_create(event: NotificationEvent, endpoints, *, attempt: int = 1, manual: bool = False) -> list:
    now = timezone.now()
    rows = Delivery.objects.bulk_create(
        [Delivery(event=event, endpoint=e, attempt=attempt, manual=manual, next_attempt_at=now) for e in endpoints]
    )
    if rows:
        enqueue_delivery_on_commit()
    return rows


def event_body(event: NotificationEvent) -> dict:
    """The JSON every endpoint receives (see docs/notifications.md)."""
    return {
        "id": event.pk,
        "kind": event.kind,
        "created_at": event.created_at.isoformat(),
        "team": {"id": event.team_id, "slug": event.team.slug},
        "data": event.payload,
    }


# --- endpoints ----------------------------------------------------------------------------------


def _kinds(kinds) -> list[str]:
    if kinds is None:
        return list(DEFAULT_KINDS)
    kinds = [str(k) for k in kinds]
    unknown = [k for k in kinds if k not in SUBSCRIBABLE]
    if unknown:
        raise NotificationError(
            f"unknown event kind(s) {', '.join(map(repr, unknown))} (known: {', '.join(SUBSCRIBABLE)})"
        )
    if not kinds:
        raise NotificationError("choose at least one event kind")
    return [k for k in SUBSCRIBABLE if k in kinds]


def _addresses(addresses) -> list[str]:
    if isinstance(addresses, str):
        addresses = re.split(r"[,\s]+", addresses)
    found = [a.strip() for a in addresses or [] if a and a.strip()]
    if not found:
        raise NotificationError("enter at least one email address")
    if len(found) > MAX_ADDRESSES:
        raise NotificationError(f"at most {MAX_ADDRESSES} addresses per endpoint")
    for address in found:
        try:
            validate_email(address)
        except ValidationError:
            raise NotificationError(f"{address!r} is not an email address") from None
    return list(dict.fromkeys(found))


@transaction.atomic
def endpoint_create(
    *, team: Team, user, type: str = Endpoint.Type.WEBHOOK, url: str = "", addresses=None, kinds=None
) -> tuple[Endpoint, str]:
    """A new endpoint and, for a webhook, its signing secret in plain text (shown once, stored encrypted;
    "" for email). The caller checked that `user` owns `team`."""
    if type not in Endpoint.Type.values:
        raise NotificationError(f"unknown endpoint type {type!r} (webhook or email)")
    kinds = _kinds(kinds)
    if Endpoint.objects.filter(team=team).count() >= MAX_ENDPOINTS_PER_TEAM:
        raise NotificationError(f"a team has at most {MAX_ENDPOINTS_PER_TEAM} endpoints: delete one first")
    secret = ""
    endpoint = Endpoint(team=team, type=type, kinds=kinds, created_by=user)
    if type == Endpoint.Type.WEBHOOK:
        try:
            endpoint.url = webhook_url_check(url)
        except WebhookUrlError as exc:
            raise NotificationError(str(exc)) from None
        secret = "whsec_" + secrets.token_urlsafe(32)
        endpoint.secret_ciphertext = secrets_cipher().encrypt(secret.encode()).decode()
        endpoint.secret_last4 = secret[-4:]
    else:
        endpoint.addresses = _addresses(addresses)
    endpoint.save()
    audit(team=team, user=user, action="webhook.created", target=endpoint.target[:200], kinds=kinds)
    return endpoint, secret


@transaction.atomic
def endpoint_delete(*, endpoint: Endpoint, user) -> None:
    audit(team=endpoint.team, user=user, action="webhook.deleted", target=endpoint.target[:200])
    endpoint.delete()


def endpoint_secret(endpoint: Endpoint) -> str:
    """The webhook's signing secret, for the sender only."""
    try:
        return secrets_cipher().decrypt(endpoint.secret_ciphertext.encode()).decode()
    except InvalidToken:
        raise NotificationError(
            "the endpoint's secret cannot be decrypted with REFINERY_SECRETS_KEY "
            "(was the key changed without listing the old one?); create the endpoint again"
        ) from None


@transaction.atomic
def endpoint_active_set(*, endpoint: Endpoint, user, active: bool) -> Endpoint:
    """Pause or resume an endpoint: a paused one gets no new deliveries, and its pending attempts wait."""
    if endpoint.active != active:
        endpoint.active = active
        endpoint.save(update_fields=["active"])
        audit(
            team=endpoint.team,
            user=user,
            action="webhook.resumed" if active else "webhook.paused",
            target=endpoint.target[:200],
        )
        if active and endpoint.deliveries.filter(status=Delivery.Status.PENDING).exists():
            enqueue_delivery_on_commit()
    return endpoint


@transaction.atomic
def endpoint_send_test(*, endpoint: Endpoint, user) -> Delivery:
    """A test event, to this endpoint only (whatever it subscribes to)."""
    event = NotificationEvent.objects.create(
        team=endpoint.team,
        kind=EventKind.TEST,
        payload={
            "message": "a test event from Refinery",
            "requested_by": getattr(user, "username", None),
            "endpoint_id": endpoint.pk,
        },
    )
    return _deliveries_create(event, [endpoint], manual=True)[0]


@transaction.atomic
def delivery_redeliver(*, delivery: Delivery) -> Delivery:
    """A new attempt of the same event to the same endpoint, due now."""
    last = Delivery.objects.filter(event=delivery.event, endpoint=delivery.endpoint).order_by("-attempt").first()
    return _deliveries_create(delivery.event, [delivery.endpoint], attempt=last.attempt + 1, manual=True)[0]


# --- sending (the worker) -------------------------------------------------------------------------


def _backoff(attempt: int) -> float | None:
    """Seconds before attempt `attempt + 1`, or None when `attempt` was the last."""
    if attempt >= settings.REFINERY_WEBHOOK_MAX_ATTEMPTS:
        return None
    steps = settings.REFINERY_WEBHOOK_BACKOFF_SECONDS
    return float(steps[min(attempt - 1, len(steps) - 1)])


def _post(endpoint: Endpoint, event: NotificationEvent, delivery: Delivery) -> tuple[int | None, str]:
    import requests

    url = webhook_url_check(endpoint.url)  # again: a name may resolve elsewhere now
    body = json.dumps(event_body(event), separators=(",", ":"), sort_keys=True).encode()
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Refinery-Webhooks/1",
        "X-Refinery-Event": event.kind,
        "X-Refinery-Delivery": str(delivery.pk),
        "X-Refinery-Timestamp": str(timestamp),
        "X-Refinery-Signature": signature_compute(secret=endpoint_secret(endpoint), timestamp=timestamp, body=body),
    }
    with requests.post(
        url,
        data=body,
        headers=headers,
        timeout=settings.REFINERY_WEBHOOK_TIMEOUT_SECONDS,
        allow_redirects=False,
        stream=True,
    ) as response:
        if 200 <= response.status_code < 300:
            return response.status_code, ""
        head = response.raw.read(RESPONSE_BYTES_KEPT, decode_content=True)  # never the whole body
    return response.status_code, f"HTTP {response.status_code}: {head.decode('utf-8', 'replace')[:200]}"


def _email(endpoint: Endpoint, event: NotificationEvent) -> None:
    body = event_body(event)
    subject = f"[Refinery] {event.get_kind_display()} ({event.team.name})"
    text = json.dumps(body, indent=2, sort_keys=True)
    summary = (event.payload or {}).get("summary", "")
    send_mail(
        subject,
        (summary + "\n\n" if summary else "") + text,
        settings.DEFAULT_FROM_EMAIL,
        list(endpoint.addresses),
        fail_silently=False,
    )


def delivery_attempt(delivery: Delivery) -> Delivery:
    """Send one claimed attempt and record the outcome. Called outside any transaction: the request may take
    REFINERY_WEBHOOK_TIMEOUT_SECONDS, and on SQLite an open transaction holds the database's one write lock."""
    endpoint, event = delivery.endpoint, delivery.event
    started = time.monotonic()
    status_code, error = None, ""
    try:
        if endpoint.type == Endpoint.Type.WEBHOOK:
            status_code, error = _post(endpoint, event, delivery)
        else:
            _email(endpoint, event)
    except (WebhookUrlError, NotificationError) as exc:
        error = str(exc)
    except Exception as exc:  # noqa: BLE001 - a receiver's failure is recorded, never raised
        error = f"{type(exc).__name__}: {exc}"[:500]
    now = timezone.now()
    delivery.response_ms = int((time.monotonic() - started) * 1000)
    delivery.status_code, delivery.error, delivery.delivered_at = status_code, error, now
    delivery.status = Delivery.Status.FAILED if error else Delivery.Status.SUCCEEDED
    delivery.next_attempt_at = None
    with transaction.atomic():
        delivery.save(
            update_fields=["status", "status_code", "response_ms", "error", "delivered_at", "next_attempt_at"]
        )
        if error and not delivery.manual:
            wait = _backoff(delivery.attempt)
            if wait is not None:
                Delivery.objects.create(
                    event=event,
                    endpoint=endpoint,
                    attempt=delivery.attempt + 1,
                    next_attempt_at=now + timedelta(seconds=wait),
                )
    return delivery


def _claim_seconds() -> float:
    """How long a claimed attempt is not due for anyone else: longer than the request can last (connect and
    read timeouts), so that only a worker that died while sending leaves it to be sent again."""
    return 2 * settings.REFINERY_WEBHOOK_TIMEOUT_SECONDS + 60


def deliveries_send_due(*, limit: int = DELIVERY_BATCH) -> list[int]:
    """Send every due attempt (at most `limit`). Two workers never send the same attempt: each claims a due
    row (FOR UPDATE SKIP LOCKED) by moving its due time past the longest a request can take, commits, and
    only then sends, outside any transaction (on SQLite a transaction would keep every other writer of the
    stack waiting for the receiver: "database is locked"). A worker that dies while sending leaves the
    attempt due again after the claim; the event id lets a receiver drop the duplicate."""
    sent: list[int] = []
    while len(sent) < limit:
        with transaction.atomic():
            delivery = (
                Delivery.objects.select_for_update(skip_locked=True, of=("self",))
                .select_related("endpoint", "event", "event__team")
                .filter(status=Delivery.Status.PENDING, next_attempt_at__lte=timezone.now(), endpoint__active=True)
                .order_by("next_attempt_at", "id")
                .first()
            )
            if delivery is None:
                break
            claimed = Delivery.objects.filter(
                pk=delivery.pk, status=Delivery.Status.PENDING, next_attempt_at=delivery.next_attempt_at
            ).update(next_attempt_at=timezone.now() + timedelta(seconds=_claim_seconds()))
        if claimed:
            delivery_attempt(delivery)
            sent.append(delivery.pk)
    return sent

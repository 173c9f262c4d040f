"""Webhook pages and /api/v1/webhooks: the secret is shown once and stored encrypted, the delivery log shows
status code, response time and attempt, Redeliver and "Send test event" reach a real receiver on
127.0.0.1, and a refused URL is reported on the form with nothing written."""

from __future__ import annotations

import json
import re

import pytest
from django.urls import reverse

from refinery.notifications.kinds import EventKind
from refinery.notifications.models import Delivery, Endpoint
from refinery.notifications.services import deliveries_send_due, endpoint_create, notify
from refinery.notifications.signing import signature_verify

pytestmark = pytest.mark.django_db


def _secret_in(html: str) -> str:
    return re.search(r'value="(whsec_[^"]+)" data-testid="webhook-secret"', html).group(1)


def test_owner_creates_a_webhook_and_sees_its_secret_once(browser_client, team, webhook_receiver, sent_notifications):
    page = browser_client.get(reverse("notifications:list"))
    assert page.status_code == 200 and b'data-testid="no-endpoints"' in page.content
    assert b">Webhooks</a>" in page.content  # the tab
    response = browser_client.post(
        reverse("notifications:list"),
        {"type": "webhook", "url": webhook_receiver.url, "kinds": ["run.failed", "gate.promoted"]},
    )
    assert response.status_code == 200
    secret = _secret_in(response.content.decode())
    endpoint = Endpoint.objects.get(team=team)
    assert endpoint.kinds == ["run.failed", "gate.promoted"] and endpoint.url == webhook_receiver.url
    assert secret not in endpoint.secret_ciphertext
    again = browser_client.get(reverse("notifications:list")).content.decode()
    assert secret not in again and f"…{secret[-4:]}" in again  # never shown again
    assert secret not in browser_client.get(reverse("notifications:detail", args=[endpoint.pk])).content.decode()

    # "Send test event", then the delivery log, then Redeliver
    assert browser_client.post(reverse("notifications:test", args=[endpoint.pk])).status_code == 302
    deliveries_send_due()
    (request,) = webhook_receiver.requests
    assert signature_verify(
        secret=secret,
        timestamp=request.headers["X-Refinery-Timestamp"],
        body=request.body,
        signature=request.headers["X-Refinery-Signature"],
    )
    log = browser_client.get(reverse("notifications:detail", args=[endpoint.pk])).content.decode()
    first = Delivery.objects.get()
    assert f'data-delivery="{first.pk}"' in log and "Delivered" in log and f"{first.response_ms} ms" in log
    assert ">200<" in log
    response = browser_client.post(reverse("notifications:redeliver", args=[endpoint.pk, first.pk]))
    assert response.status_code == 302
    deliveries_send_due()
    assert len(webhook_receiver.requests) == 2
    assert list(Delivery.objects.order_by("attempt").values_list("attempt", "status_code")) == [(1, 200), (2, 200)]

    assert browser_client.post(reverse("notifications:active", args=[endpoint.pk]), {"active": "0"}).status_code == 302
    assert not Endpoint.objects.get(pk=endpoint.pk).active
    assert b'data-testid="paused"' in browser_client.get(reverse("notifications:detail", args=[endpoint.pk])).content
    assert browser_client.post(reverse("notifications:delete", args=[endpoint.pk])).status_code == 302
    assert not Endpoint.objects.exists() and not Delivery.objects.exists()


def test_a_refused_url_is_shown_on_the_form(browser_client, team, settings):
    settings.REFINERY_WEBHOOK_ALLOW_PRIVATE = False
    response = browser_client.post(
        reverse("notifications:list"),
        {"type": "webhook", "url": "http://169.254.169.254/latest/meta-data/", "kinds": ["run.failed"]},
    )
    assert response.status_code == 400
    assert b"loopback, private or link-local" in response.content
    response = browser_client.post(reverse("notifications:list"), {"type": "webhook", "url": "x", "kinds": []})
    assert response.status_code == 400 and not Endpoint.objects.exists()


def test_email_endpoints_from_the_page(browser_client, team):
    response = browser_client.post(
        reverse("notifications:list"), {"type": "email", "addresses": "ops@example.com", "kinds": ["schedule.paused"]}
    )
    assert response.status_code == 200 and b"Email endpoint created" in response.content
    assert Endpoint.objects.get(team=team).addresses == ["ops@example.com"]


def test_another_teams_endpoint_and_delivery_are_404(browser_client, bob, webhook_receiver, sent_notifications):
    theirs, _ = endpoint_create(team=bob.teams.get(), user=bob, url=webhook_receiver.url)
    delivery = notify(team=bob.teams.get(), kind=EventKind.RUN_FAILED, payload={}).deliveries.get()
    assert browser_client.get(reverse("notifications:detail", args=[theirs.pk])).status_code == 404
    for name, args in (
        ("test", [theirs.pk]),
        ("delete", [theirs.pk]),
        ("active", [theirs.pk]),
        ("redeliver", [theirs.pk, delivery.pk]),
    ):
        assert browser_client.post(reverse(f"notifications:{name}", args=args)).status_code == 404, name
    assert Endpoint.objects.filter(pk=theirs.pk).exists() and Delivery.objects.count() == 1


def test_the_api_creates_tests_lists_and_redelivers(api, team, webhook_receiver, sent_notifications):
    response = api.post("/api/v1/webhooks", {"url": webhook_receiver.url, "kinds": ["run.failed"]})
    assert response.status_code == 201, response.content
    created = response.json()
    secret = created["secret"]
    assert secret.startswith("whsec_") and created["secret_ends_with"] == secret[-4:]
    listed = api.get("/api/v1/webhooks").json()
    assert [e["id"] for e in listed] == [created["id"]] and "secret" not in listed[0]

    queued = api.post(f"/api/v1/webhooks/{created['id']}/test")
    assert queued.status_code == 202 and queued.json()["status"] == "pending" and queued.json()["kind"] == "test"
    deliveries_send_due()
    log = api.get(f"/api/v1/webhooks/{created['id']}/deliveries").json()
    assert [(d["attempt"], d["status"], d["status_code"]) for d in log] == [(1, "succeeded", 200)]
    assert log[0]["response_ms"] is not None
    again = api.post(f"/api/v1/webhooks/{created['id']}/deliveries/{log[0]['id']}/redeliver")
    assert again.status_code == 202 and again.json()["attempt"] == 2
    deliveries_send_due()
    assert [json.loads(r.body)["kind"] for r in webhook_receiver.requests] == ["test", "test"]
    assert all(
        signature_verify(
            secret=secret,
            timestamp=r.headers["X-Refinery-Timestamp"],
            body=r.body,
            signature=r.headers["X-Refinery-Signature"],
        )
        for r in webhook_receiver.requests
    )

    refused = api.post("/api/v1/webhooks", {"url": "ftp://example.org/", "kinds": ["run.failed"]})
    assert refused.status_code == 400 and "http:// or https://" in refused.json()["detail"]
    unknown = api.post("/api/v1/webhooks", {"url": webhook_receiver.url, "kinds": ["run.exploded"]})
    assert unknown.status_code == 400 and "unknown event kind" in unknown.json()["detail"]
    assert api.client.delete(f"/api/v1/webhooks/{created['id']}", headers=api.headers).status_code == 204
    assert not Endpoint.objects.exists()


def test_the_api_is_for_owners_and_the_own_team(api, bob_api, team, viewer, bob):
    from refinery.teams.services import api_token_create
    from tests.fixtures import ApiClient

    _, key = api_token_create(user=viewer, team=team)
    as_viewer = ApiClient(key)
    assert as_viewer.get("/api/v1/webhooks").status_code == 403
    assert as_viewer.post("/api/v1/webhooks", {"url": "http://127.0.0.1:9/"}).status_code == 403
    theirs, _ = endpoint_create(team=bob.teams.get(), user=bob, url="http://127.0.0.1:9/bob")
    assert api.get(f"/api/v1/webhooks/{theirs.pk}/deliveries").status_code == 404
    assert api.post(f"/api/v1/webhooks/{theirs.pk}/test").status_code == 404
    assert bob_api.get(f"/api/v1/webhooks/{theirs.pk}/deliveries").status_code == 200

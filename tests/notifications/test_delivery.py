"""Notifications: the outbox, signed webhooks to a real receiver on 127.0.0.1, retries after the backoff,
the delivery log, redelivery, email, the SSRF guard, and run.failed/run.succeeded from the run state machine."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time

import pytest
from django.core import mail
from django.db import transaction

from refinery.notifications.kinds import SUBSCRIBABLE, EventKind
from refinery.notifications.models import Delivery, Endpoint, NotificationEvent
from refinery.notifications.services import (
    NotificationError,
    deliveries_send_due,
    delivery_redeliver,
    endpoint_active_set,
    endpoint_create,
    endpoint_send_test,
    notify,
)
from refinery.notifications.signing import signature_compute, signature_verify
from refinery.runs.models import Status
from refinery.runs.services import run_cancel, run_create, stage_claim, stage_finish
from tests.factories import TeamFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def team_owner():
    user = UserFactory()
    return TeamFactory(members=[user]), user


@pytest.fixture
def fast_backoff(settings):
    settings.REFINERY_WEBHOOK_BACKOFF_SECONDS = [1.0]
    settings.REFINERY_WEBHOOK_MAX_ATTEMPTS = 3
    settings.REFINERY_WEBHOOK_TIMEOUT_SECONDS = 3


def webhook(team, user, url, kinds=None) -> tuple[Endpoint, str]:
    return endpoint_create(team=team, user=user, url=url, kinds=kinds)


def verified(request, secret: str) -> bool:
    return signature_verify(
        secret=secret,
        timestamp=request.headers["X-Refinery-Timestamp"],
        body=request.body,
        signature=request.headers["X-Refinery-Signature"],
    )


# --- signature ------------------------------------------------------------------------------------


def test_signature_is_hmac_sha256_of_timestamp_dot_body():
    body = b'{"kind":"test"}'
    by_hand = "94f5692e57a0c550df2b9a1b63fcb9a1aab3b8c1b4c7776a94f40fa745a70389"  # computed once, offline
    assert hmac.new(b"whsec_test", b"1700000000." + body, hashlib.sha256).hexdigest() == by_hand
    assert signature_compute(secret="whsec_test", timestamp=1700000000, body=body) == "sha256=" + by_hand
    ok = dict(secret="whsec_test", timestamp="1700000000", body=body, signature="sha256=" + by_hand)
    assert signature_verify(**ok, now=1700000100)
    assert not signature_verify(**ok, now=1700000000 + 301)  # too old: a replay
    assert not signature_verify(**{**ok, "body": b'{"kind":"tesT"}'}, now=1700000000)
    assert not signature_verify(**{**ok, "secret": "whsec_other"}, now=1700000000)
    assert not signature_verify(**{**ok, "timestamp": "1700000001"}, now=1700000000)
    assert not signature_verify(**{**ok, "timestamp": "soon"}, now=1700000000)


# --- the outbox -----------------------------------------------------------------------------------


def test_the_event_is_written_in_the_callers_transaction(
    team_owner, sent_notifications, django_capture_on_commit_callbacks
):
    team, user = team_owner
    webhook(team, user, "http://127.0.0.1:9/hook")
    with pytest.raises(RuntimeError), transaction.atomic():
        notify(team=team, kind=EventKind.RUN_FAILED, payload={"x": 1})
        raise RuntimeError("the state change fails after notify")
    assert not NotificationEvent.objects.exists() and not Delivery.objects.exists()

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        notify(team=team, kind=EventKind.RUN_FAILED, payload={"x": 1})
        assert sent_notifications == []  # not before commit
    assert len(callbacks) == 1 and sent_notifications == [True]
    assert Delivery.objects.get().status == Delivery.Status.PENDING


def test_only_subscribed_active_endpoints_get_a_delivery(team_owner, sent_notifications):
    team, user = team_owner
    default, _ = webhook(team, user, "http://127.0.0.1:9/a")  # default kinds: not run.succeeded
    opted_in, _ = webhook(team, user, "http://127.0.0.1:9/b", kinds=["run.succeeded"])
    paused, _ = webhook(team, user, "http://127.0.0.1:9/c", kinds=list(SUBSCRIBABLE))
    Endpoint.objects.filter(pk=paused.pk).update(active=False)
    other_team = TeamFactory(members=[UserFactory()])
    webhook(other_team, other_team.memberships.get().user, "http://127.0.0.1:9/d", kinds=list(SUBSCRIBABLE))

    notify(team=team, kind=EventKind.RUN_SUCCEEDED, payload={})
    assert [d.endpoint_id for d in Delivery.objects.all()] == [opted_in.pk]
    notify(team=team, kind=EventKind.RUN_FAILED, payload={})
    assert sorted(Delivery.objects.filter(event__kind="run.failed").values_list("endpoint_id", flat=True)) == [
        default.pk
    ]


def test_unknown_kinds_are_refused(team_owner):
    team, user = team_owner
    with pytest.raises(ValueError):
        notify(team=team, kind="run.exploded", payload={})
    with pytest.raises(NotificationError, match="unknown event kind"):
        webhook(team, user, "http://127.0.0.1:9/", kinds=["run.failed", "test"])
    assert not Endpoint.objects.exists()


# --- webhooks to a real receiver ------------------------------------------------------------------


@pytest.mark.parametrize("kind", SUBSCRIBABLE)
def test_every_kind_is_delivered_signed(team_owner, webhook_receiver, sent_notifications, kind):
    team, user = team_owner
    endpoint, secret = webhook(team, user, webhook_receiver.url, kinds=list(SUBSCRIBABLE))
    event = notify(team=team, kind=kind, payload={"summary": "hello", "n": 1})
    assert deliveries_send_due() == [Delivery.objects.get().pk]

    (request,) = webhook_receiver.requests
    assert verified(request, secret)
    assert not verified(request, secret + "x")
    assert request.headers["X-Refinery-Event"] == kind
    assert request.headers["Content-Type"] == "application/json"
    body = json.loads(request.body)
    assert body == {
        "id": event.pk,
        "kind": kind,
        "created_at": event.created_at.isoformat(),
        "team": {"id": team.pk, "slug": team.slug},
        "data": {"summary": "hello", "n": 1},
    }
    delivery = Delivery.objects.get()
    assert (delivery.status, delivery.status_code, delivery.attempt, delivery.error) == ("succeeded", 200, 1, "")
    assert delivery.response_ms is not None and delivery.delivered_at is not None
    assert Endpoint.objects.get(pk=endpoint.pk).secret_ciphertext != secret  # stored encrypted
    assert secret not in Endpoint.objects.filter(pk=endpoint.pk).values_list("secret_ciphertext", flat=True)[0]


def test_a_receiver_answering_500_gets_the_event_again_after_the_backoff(
    team_owner, webhook_receiver, fast_backoff, sent_notifications
):
    team, user = team_owner
    _, secret = webhook(team, user, webhook_receiver.url)
    webhook_receiver.statuses = [500, 503]
    notify(team=team, kind=EventKind.RUN_FAILED, payload={"run": {"number": 4}})

    first = deliveries_send_due()
    assert len(first) == 1 and len(webhook_receiver.requests) == 1
    assert deliveries_send_due() == []  # the retry is not due yet
    time.sleep(1.1)
    second = deliveries_send_due()
    assert len(second) == 1 and len(webhook_receiver.requests) == 2
    time.sleep(1.1)
    third = deliveries_send_due()
    assert len(third) == 1 and len(webhook_receiver.requests) == 3

    log = list(Delivery.objects.order_by("attempt").values_list("attempt", "status", "status_code"))
    assert log == [(1, "failed", 500), (2, "failed", 503), (3, "succeeded", 200)]
    failed = Delivery.objects.get(attempt=1)
    assert failed.error.startswith("HTTP 500") and failed.response_ms is not None
    ids = {json.loads(r.body)["id"] for r in webhook_receiver.requests}
    assert len(ids) == 1 and all(verified(r, secret) for r in webhook_receiver.requests)
    times = [d.delivered_at for d in Delivery.objects.order_by("attempt")]
    assert all((b - a).total_seconds() >= 1.0 for a, b in zip(times, times[1:])), times


def test_attempts_stop_at_the_maximum(team_owner, webhook_receiver, settings, sent_notifications):
    settings.REFINERY_WEBHOOK_BACKOFF_SECONDS = [0.0]
    settings.REFINERY_WEBHOOK_MAX_ATTEMPTS = 3
    team, user = team_owner
    webhook(team, user, webhook_receiver.url)
    webhook_receiver.statuses = [500] * 10
    notify(team=team, kind=EventKind.RUN_FAILED, payload={})
    assert len(deliveries_send_due()) == 3
    assert deliveries_send_due() == []
    assert len(webhook_receiver.requests) == 3
    assert not Delivery.objects.filter(status=Delivery.Status.PENDING).exists()


def test_an_unreachable_receiver_is_logged_and_retried(team_owner, fast_backoff, sent_notifications):
    team, user = team_owner
    webhook(team, user, "http://127.0.0.1:9/nobody")  # discard port: connection refused
    notify(team=team, kind=EventKind.RUN_FAILED, payload={})
    deliveries_send_due()
    failed = Delivery.objects.get(attempt=1)
    assert failed.status == "failed" and failed.status_code is None and "ConnectionError" in failed.error
    assert Delivery.objects.get(attempt=2).status == "pending"


def test_redeliver_and_test_event_are_new_attempts(team_owner, webhook_receiver, sent_notifications):
    team, user = team_owner
    endpoint, secret = webhook(team, user, webhook_receiver.url)
    notify(team=team, kind=EventKind.GATE_REJECTED, payload={"decision": "kept champion"})
    deliveries_send_due()
    first = Delivery.objects.get()
    again = delivery_redeliver(delivery=first)
    assert (again.attempt, again.manual, again.status) == (2, True, "pending")
    deliveries_send_due()
    assert [r.headers["X-Refinery-Event"] for r in webhook_receiver.requests] == ["gate.rejected"] * 2
    assert json.loads(webhook_receiver.requests[0].body) == json.loads(webhook_receiver.requests[1].body)

    test = endpoint_send_test(endpoint=endpoint, user=user)
    deliveries_send_due()
    assert test.event.kind == "test"
    assert webhook_receiver.requests[-1].headers["X-Refinery-Event"] == "test"
    assert verified(webhook_receiver.requests[-1], secret)
    assert Delivery.objects.filter(endpoint=endpoint, status="succeeded").count() == 3


@pytest.mark.django_db(transaction=True)
def test_two_workers_never_send_the_same_attempt(webhook_receiver, sent_notifications):
    """While one worker holds an attempt (row locked), another's pass skips it instead of sending it."""
    user = UserFactory()
    team = TeamFactory(members=[user])
    webhook(team, user, webhook_receiver.url)
    notify(team=team, kind=EventKind.RUN_FAILED, payload={})
    delivery = Delivery.objects.get()
    locked, release = threading.Event(), threading.Event()

    def first_worker():
        from django.db import connection

        try:
            with transaction.atomic():
                Delivery.objects.select_for_update().get(pk=delivery.pk)
                locked.set()
                release.wait(10)
        finally:
            connection.close()

    thread = threading.Thread(target=first_worker)
    thread.start()
    assert locked.wait(10)
    assert deliveries_send_due() == []  # skipped, not sent
    release.set()
    thread.join()
    assert deliveries_send_due() == [delivery.pk]
    assert len(webhook_receiver.requests) == 1


@pytest.mark.django_db(transaction=True)
def test_an_attempt_is_sent_outside_any_transaction_and_claimed_meanwhile(sent_notifications):
    """While a receiver takes its time, the sending worker holds no transaction (on SQLite one would hold the
    database's only write lock); the attempt is claimed, so another worker's pass does not send it too."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from django.db import connection
    from django.utils import timezone

    answering, release, seen = threading.Event(), threading.Event(), []

    class Slow(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            seen.append(self.headers["X-Refinery-Delivery"])
            answering.set()
            release.wait(10)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    in_transaction, sent = [], []
    try:
        user = UserFactory()
        team = TeamFactory(members=[user])
        webhook(team, user, f"http://127.0.0.1:{server.server_address[1]}/hook")
        notify(team=team, kind=EventKind.RUN_FAILED, payload={})
        delivery = Delivery.objects.get()

        def first_worker():
            import requests

            real_post = requests.post

            def post(*args, **kwargs):
                in_transaction.append(connection.in_atomic_block)
                return real_post(*args, **kwargs)

            requests.post = post
            try:
                sent.extend(deliveries_send_due())
            finally:
                requests.post = real_post
                connection.close()

        thread = threading.Thread(target=first_worker)
        thread.start()
        assert answering.wait(10)
        claimed = Delivery.objects.get(pk=delivery.pk)
        assert claimed.status == Delivery.Status.PENDING and claimed.next_attempt_at > timezone.now()
        assert deliveries_send_due() == []  # claimed by the first worker: not sent twice
        release.set()
        thread.join(10)
    finally:
        release.set()
        server.shutdown()
        server.server_close()
    assert in_transaction == [False] and sent == [delivery.pk] and seen == [str(delivery.pk)]
    assert Delivery.objects.get(pk=delivery.pk).status == Delivery.Status.SUCCEEDED


# --- email ----------------------------------------------------------------------------------------


def test_email_goes_through_djangos_backend(team_owner, settings, sent_notifications):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    team, user = team_owner
    endpoint, secret = endpoint_create(
        team=team, user=user, type="email", addresses="ops@example.com, ml@example.com", kinds=["schedule.paused"]
    )
    assert secret == "" and endpoint.addresses == ["ops@example.com", "ml@example.com"]
    notify(team=team, kind=EventKind.SCHEDULE_PAUSED, payload={"summary": "nightly-sft paused after 3 failures"})
    deliveries_send_due()
    (message,) = mail.outbox
    assert message.to == ["ops@example.com", "ml@example.com"]
    assert "Schedule paused" in message.subject and team.name in message.subject
    assert "nightly-sft paused after 3 failures" in message.body and '"kind": "schedule.paused"' in message.body
    assert Delivery.objects.get().status == "succeeded"
    with pytest.raises(NotificationError, match="not an email address"):
        endpoint_create(team=team, user=user, type="email", addresses="ops@", kinds=["run.failed"])


# --- SSRF -----------------------------------------------------------------------------------------

REFUSED = [
    "http://127.0.0.1:8000/hook",
    "http://localhost/hook",
    "http://10.1.2.3/",
    "http://192.168.0.1/",
    "http://172.16.0.1/",
    "http://169.254.169.254/latest/meta-data/",
    "http://[::1]/",
    "http://0.0.0.0/",
    "http://[::ffff:127.0.0.1]/",
    "http://2130706433/",
]


@pytest.mark.parametrize("url", REFUSED)
def test_private_addresses_are_refused_unless_allowed(team_owner, settings, url):
    settings.REFINERY_WEBHOOK_ALLOW_PRIVATE = False
    team, user = team_owner
    with pytest.raises(NotificationError, match="loopback, private or link-local"):
        webhook(team, user, url)
    assert not Endpoint.objects.exists()


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://example.org/x", "http:// or https://"),
        ("file:///etc/passwd", "http:// or https://"),
        ("gopher://127.0.0.1:6379/", "http:// or https://"),
        ("http://user:pw@127.0.0.1/", "no user name"),
        ("http://no-such-host.invalid/", "does not resolve"),
        ("", "enter the URL"),
        ("http:///path", "no host"),
    ],
)
def test_malformed_urls_are_refused(team_owner, url, why):
    team, user = team_owner
    with pytest.raises(NotificationError, match=why):
        webhook(team, user, url)
    assert not Endpoint.objects.exists()


def test_the_guard_runs_again_before_each_delivery(team_owner, webhook_receiver, settings, sent_notifications):
    team, user = team_owner
    webhook(team, user, webhook_receiver.url)  # allowed when created (the tests allow private addresses)
    settings.REFINERY_WEBHOOK_ALLOW_PRIVATE = False
    notify(team=team, kind=EventKind.RUN_FAILED, payload={})
    deliveries_send_due()
    assert webhook_receiver.requests == []
    assert "loopback, private or link-local" in Delivery.objects.get(attempt=1).error


def test_redirects_are_not_followed(team_owner, webhook_receiver, sent_notifications):
    team, user = team_owner
    webhook(team, user, webhook_receiver.url)
    webhook_receiver.statuses = [302]
    notify(team=team, kind=EventKind.RUN_FAILED, payload={})
    deliveries_send_due()
    assert len(webhook_receiver.requests) == 1
    assert Delivery.objects.get(attempt=1).status_code == 302


# --- run.failed / run.succeeded from the state machine -----------------------------------------------


def _finish_only_stage(pipeline, status, capture) -> NotificationEvent | None:
    with capture(execute=True):
        run = run_create(pipeline=pipeline, user=pipeline.created_by)
    stage = run.stages.get()
    stage_claim(stage_run_id=stage.pk, worker="w")
    stage_finish(stage_run_id=stage.pk, status=status, error="boom" if status == Status.FAILED else "")
    return run


def test_a_failed_run_notifies_once(
    make_pipeline, sent_stages, sent_notifications, django_capture_on_commit_callbacks, webhook_receiver
):
    pipeline = make_pipeline(("a", "base"))
    _, secret = webhook(pipeline.team, pipeline.created_by, webhook_receiver.url)
    run = _finish_only_stage(pipeline, Status.FAILED, django_capture_on_commit_callbacks)
    event = NotificationEvent.objects.get()
    assert event.kind == "run.failed" and event.team == pipeline.team
    assert event.payload["run"]["number"] == run.number and "boom" in event.payload["run"]["error"]
    assert event.payload["summary"].startswith(f"Run #{run.number}")
    deliveries_send_due()
    assert verified(webhook_receiver.requests[0], secret)


def test_succeeded_runs_notify_only_endpoints_that_opted_in(
    make_pipeline, sent_stages, sent_notifications, django_capture_on_commit_callbacks
):
    pipeline = make_pipeline(("a", "base"))
    webhook(pipeline.team, pipeline.created_by, "http://127.0.0.1:9/")
    _finish_only_stage(pipeline, Status.SUCCEEDED, django_capture_on_commit_callbacks)
    event = NotificationEvent.objects.get()
    assert event.kind == "run.succeeded" and not event.deliveries.exists()


def test_a_canceled_run_notifies_nothing(
    make_pipeline, sent_stages, sent_notifications, django_capture_on_commit_callbacks
):
    pipeline = make_pipeline(("a", "base"))
    with django_capture_on_commit_callbacks(execute=True):
        run = run_create(pipeline=pipeline, user=pipeline.created_by)
    run_cancel(run=run, user=pipeline.created_by)
    run.refresh_from_db()
    assert run.status == Status.CANCELED and run.finished_at is not None
    assert not NotificationEvent.objects.exists()


def test_the_verifier_in_the_docs_accepts_a_real_delivery(team_owner, webhook_receiver, sent_notifications):
    """docs/notifications.md's Python snippet, run as written against a request the receiver got."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "notifications.md").read_text()
    snippet = text.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict = {}
    exec(compile(snippet, "docs/notifications.md", "exec"), namespace)  # noqa: S102 - our own docs
    team, user = team_owner
    _, secret = webhook(team, user, webhook_receiver.url)
    notify(team=team, kind=EventKind.RUN_FAILED, payload={})
    deliveries_send_due()
    (request,) = webhook_receiver.requests
    assert namespace["verify"](secret, request.headers, request.body)
    assert not namespace["verify"](secret, request.headers, request.body + b" ")
    assert not namespace["verify"]("whsec_wrong", request.headers, request.body)


def test_a_paused_endpoint_keeps_its_pending_attempts_until_resumed(team_owner, webhook_receiver, sent_notifications):
    team, user = team_owner
    endpoint, _ = webhook(team, user, webhook_receiver.url)
    notify(team=team, kind=EventKind.RUN_FAILED, payload={})
    endpoint_active_set(endpoint=endpoint, user=user, active=False)
    notify(team=team, kind=EventKind.RUN_FAILED, payload={})  # none for a paused endpoint
    assert deliveries_send_due() == [] and webhook_receiver.requests == []
    assert Delivery.objects.filter(status="pending").count() == 1
    endpoint_active_set(endpoint=endpoint, user=user, active=True)
    assert len(deliveries_send_due()) == 1 and len(webhook_receiver.requests) == 1


def test_an_error_answer_is_logged_without_reading_a_huge_body(team_owner, sent_notifications, fast_backoff):
    """A receiver answering 500 with 50 MB: the log keeps the status and the body's first 200 characters."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Huge(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(500)
            self.send_header("Content-Length", str(50 * 1024 * 1024))
            self.end_headers()
            try:
                for _ in range(50):
                    self.wfile.write(b"x" * 1024 * 1024)
            except OSError:
                pass  # the sender hung up after its first kilobyte

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Huge)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        team, user = team_owner
        webhook(team, user, f"http://127.0.0.1:{server.server_address[1]}/")
        notify(team=team, kind=EventKind.RUN_FAILED, payload={})
        deliveries_send_due()
    finally:
        server.shutdown()
        server.server_close()
    failed = Delivery.objects.get(attempt=1)
    assert failed.status_code == 500 and failed.error == "HTTP 500: " + "x" * 200

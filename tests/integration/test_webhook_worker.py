"""End to end: a run that fails on a real Celery worker produces a run.failed event, and the worker itself
delivers it, signed, to a real receiver on 127.0.0.1 (the test settings allow private addresses)."""

from __future__ import annotations

import json

import pytest

from refinery.notifications.models import Delivery
from refinery.notifications.services import endpoint_create
from refinery.notifications.signing import signature_verify
from refinery.runs.models import Run, Status
from refinery.runs.services import run_create
from tests.helpers import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_a_failing_run_is_delivered_by_the_worker(celery_worker_process, make_pipeline, webhook_receiver):
    pipeline = make_pipeline(("sft", "base"))  # its base model path does not exist: the stage fails
    _, secret = endpoint_create(
        team=pipeline.team, user=pipeline.created_by, url=webhook_receiver.url, kinds=["run.failed"]
    )
    run = run_create(pipeline=pipeline, user=pipeline.created_by)  # commits: the wake-up goes to Redis

    wait_until(
        lambda: Run.objects.get(pk=run.pk).is_finished,
        timeout=120,
        interval=0.5,
        message=lambda: f"run still {Run.objects.get(pk=run.pk).status}:\n{celery_worker_process.log_tail(40)}",
    )
    run.refresh_from_db()
    assert run.status == Status.FAILED, run.error
    wait_until(
        lambda: webhook_receiver.requests,
        timeout=60,
        interval=0.2,
        message=lambda: f"no webhook received:\n{celery_worker_process.log_tail(40)}",
    )
    (request,) = webhook_receiver.requests
    assert request.headers["X-Refinery-Event"] == "run.failed"
    assert signature_verify(
        secret=secret,
        timestamp=request.headers["X-Refinery-Timestamp"],
        body=request.body,
        signature=request.headers["X-Refinery-Signature"],
    )
    body = json.loads(request.body)
    assert body["kind"] == "run.failed" and body["data"]["run"]["number"] == run.number
    assert body["data"]["run"]["status"] == "failed" and body["team"]["id"] == pipeline.team_id
    wait_until(lambda: Delivery.objects.filter(status="succeeded").exists(), timeout=10, interval=0.2)
    delivery = Delivery.objects.get()
    assert (delivery.attempt, delivery.status_code) == (1, 200) and delivery.response_ms is not None

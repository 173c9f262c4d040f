"""jobs.deliver_notifications: its name and queue, its place in beat's schedule (so retries survive
restarts), and the task function sending a due attempt."""

from __future__ import annotations

import pytest

from jobs.app import NOTIFY_SCHEDULE_NAME, app
from jobs.queues import Queue, TaskName
from jobs.tasks import deliver_notifications
from refinery.notifications.kinds import EventKind
from refinery.notifications.models import Delivery
from refinery.notifications.services import endpoint_create, notify
from tests.factories import TeamFactory, UserFactory

pytestmark = pytest.mark.django_db


def test_the_task_has_its_name_and_the_cpu_queue():
    assert deliver_notifications.name == "jobs.deliver_notifications" and deliver_notifications.name in app.tasks
    assert app.amqp.router.route({}, TaskName.DELIVER_NOTIFICATIONS.value)["queue"].name == Queue.CPU


@pytest.mark.django_db(transaction=True)  # the scheduler closes DB connections, as beat does
def test_beat_start_installs_the_delivery_poll_once(settings):
    from django_celery_beat.models import PeriodicTask
    from django_celery_beat.schedulers import DatabaseScheduler

    for _ in range(2):
        DatabaseScheduler(app=app).setup_schedule()
    task = PeriodicTask.objects.get(name=NOTIFY_SCHEDULE_NAME)
    assert task.task == TaskName.DELIVER_NOTIFICATIONS and task.queue == Queue.CPU and task.enabled
    assert task.interval.every == settings.REFINERY_NOTIFY_POLL_SECONDS == 10
    assert PeriodicTask.objects.filter(task=TaskName.DELIVER_NOTIFICATIONS).count() == 1


def test_the_task_sends_due_attempts(webhook_receiver, sent_notifications):
    user = UserFactory()
    team = TeamFactory(members=[user])
    endpoint_create(team=team, user=user, url=webhook_receiver.url)
    notify(team=team, kind=EventKind.GATE_AWAITING_APPROVAL, payload={"version": 8})
    assert deliver_notifications() == [Delivery.objects.get().pk]
    assert deliver_notifications() == []  # twice: nothing left to send
    assert len(webhook_receiver.requests) == 1


def test_a_full_batch_hands_the_rest_to_another_task(webhook_receiver, sent_notifications, monkeypatch):
    from refinery.notifications import services

    monkeypatch.setattr(services, "DELIVERY_BATCH", 2)
    user = UserFactory()
    team = TeamFactory(members=[user])
    endpoint_create(team=team, user=user, url=webhook_receiver.url)
    for _ in range(3):
        notify(team=team, kind=EventKind.RUN_FAILED, payload={})
    assert sent_notifications == []  # db test: the on-commit wake-ups never ran
    assert len(deliver_notifications()) == 2 and sent_notifications == [True]
    assert len(deliver_notifications()) == 1 and sent_notifications == [True]
    assert len(webhook_receiver.requests) == 3

"""Wake-up call to the delivery worker, after commit. The Delivery rows stay the source of truth: beat's
periodic `jobs.deliver_notifications` picks up anything a lost message left behind."""
from __future__ import annotations

from django.db import transaction


def enqueue_delivery_on_commit() -> None:
    transaction.on_commit(lambda: send_deliver_notifications())


def send_deliver_notifications() -> None:
    from jobs.app import app
    from jobs.queues import Queue, TaskName

    app.send_task(TaskName.DELIVER_NOTIFICATIONS.value, queue=Queue.CPU.value)

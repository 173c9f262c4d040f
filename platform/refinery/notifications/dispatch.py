"""Wake-up call to the delivery worker, after commit. The Delivery rows stay the source of truth: beat's
periodic `jobs.deliver_notifications` picks up anything a lost message left behind."""

from __future__ import annotations

from django.db import transaction

from refinery.core.tasks import Queue, TaskName, task_send


def enqueue_delivery_on_commit() -> None:
    transaction.on_commit(lambda: send_deliver_notifications())


def send_deliver_notifications() -> None:
    task_send(TaskName.DELIVER_NOTIFICATIONS, queue=Queue.CPU)

"""Wake-up calls to the workers. The database row stays the source of truth."""

from __future__ import annotations

from django.db import transaction

from refinery.core.tasks import Queue, TaskName, task_send


def enqueue_stage_on_commit(stage_run_id: int) -> None:
    """Send `jobs.run_stage` only once the surrounding transaction commits."""
    transaction.on_commit(lambda: send_run_stage(stage_run_id))


def send_run_stage(stage_run_id: int) -> None:
    task_send(TaskName.RUN_STAGE, queue=Queue.GPU, args=[stage_run_id])

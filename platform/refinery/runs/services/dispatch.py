"""Wake-up calls to the workers. The database row stays the source of truth."""
from __future__ import annotations

from django.db import transaction


def enqueue_stage_on_commit(stage_run_id: int) -> None:
    """Send `jobs.run_stage` only once the surrounding transaction commits."""
    transaction.on_commit(lambda: send_run_stage(stage_run_id))


def send_run_stage(stage_run_id: int) -> None:
    from jobs.app import app
    from jobs.queues import Queue, TaskName

    app.send_task(TaskName.RUN_STAGE.value, args=[stage_run_id], queue=Queue.GPU.value)

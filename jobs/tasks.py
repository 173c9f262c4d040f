"""Thin Celery tasks: take ids, call one function. The logic lives in jobs.supervisor and refinery.runs."""

from __future__ import annotations

import os
import socket

from jobs.app import app
from jobs.queues import TaskName


def worker_name(hostname: str | None = None) -> str:
    """Who holds a stage's lease: the Celery node (or the host) and the process id."""
    return f"{hostname or socket.gethostname()}:{os.getpid()}"


@app.task(
    name=TaskName.RUN_STAGE.value, bind=True, acks_late=False, ignore_result=True, Request="jobs.busy:PausingRequest"
)
def run_stage(self, stage_run_id: int) -> str | None:
    """Wake up and run the fairest queued stage (refinery.runs.services.stage_claim): the one named here,
    or another team's when fair share says so. Safe to deliver twice: a duplicate claims the next fair
    stage, whose own wake-up then finds nothing left or takes the next one; with nothing queued it returns.

    The message is acked when the task starts (see CELERY_TASK_ACKS_LATE in settings): the lease
    and the reaper, not the broker, bring back a stage whose worker died. While it runs, the worker
    takes no other message (jobs.busy, for RabbitMQ; worker_disable_prefetch for Redis)."""
    from jobs.supervisor import supervise_stage

    return supervise_stage(stage_run_id=int(stage_run_id), worker=worker_name(self.request.hostname))


@app.task(name=TaskName.REAP_STAGES.value, ignore_result=True)
def reap_stages() -> list[int]:
    """Requeue (or fail) stages whose worker stopped renewing its lease; re-send stale wake-ups; close the
    MLflow parent runs of runs that ended with no supervisor there to close them."""
    from refinery.runs.services import stage_reap_expired, stage_redispatch_stale
    from refinery.tracking.runs import pipeline_runs_end_pending

    handled = stage_reap_expired() + stage_redispatch_stale()
    pipeline_runs_end_pending()
    return handled


@app.task(name=TaskName.DELIVER_NOTIFICATIONS.value, ignore_result=True)
def deliver_notifications() -> list[int]:
    """Send the due webhook and email attempts (new events, retries after their backoff, redeliveries).
    Safe to run twice and in parallel: each attempt is claimed with FOR UPDATE SKIP LOCKED."""
    from refinery.notifications.dispatch import send_deliver_notifications
    from refinery.notifications.services import DELIVERY_BATCH, deliveries_send_due

    sent = deliveries_send_due(limit=DELIVERY_BATCH)
    if len(sent) == DELIVERY_BATCH:  # more may be due: hand them to the next free worker now, not at the next tick
        send_deliver_notifications()
    return sent


@app.task(name=TaskName.SCHEDULES_TICK.value, ignore_result=True)
def schedules_tick() -> int:
    """Fire every schedule's due windows (each at most once: the (schedule, window) key decides). Safe to
    run twice at once, from two beats or a retry."""
    from refinery.schedules.services import schedule_tick_all

    return len(schedule_tick_all())

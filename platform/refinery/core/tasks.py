"""The task queue as the web side sees it: queue and task names (the contract with the workers in jobs/) and
the Celery app that sends tasks by name. jobs/app.py configures this same app for the workers (task routes,
task modules, beat); nothing here imports jobs/, so the apps stay below it."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from celery import Celery


class Queue(StrEnum):
    GPU = "gpu"  # training stages: concurrency 1 per GPU, prefetch 1
    CPU = "cpu"  # light work: reaper, validation, schedule triggers


class TaskName(StrEnum):
    RUN_STAGE = "jobs.run_stage"
    REAP_STAGES = "jobs.reap_stages"
    DELIVER_NOTIFICATIONS = "jobs.deliver_notifications"
    SCHEDULES_TICK = "jobs.schedules_tick"


app = Celery("refinery")
app.config_from_object("django.conf:settings", namespace="CELERY")


def _ensure_filesystem_broker_dirs() -> None:
    for key in ("data_folder_in", "data_folder_out", "control_folder"):
        folder = (app.conf.broker_transport_options or {}).get(key)
        if folder and str(app.conf.broker_url or "").startswith("filesystem://"):
            Path(folder).mkdir(parents=True, exist_ok=True)


_ensure_filesystem_broker_dirs()


def task_send(name: TaskName, *, queue: Queue, args: list | None = None) -> None:
    """Send task `name` to `queue` now (callers wrap it in transaction.on_commit)."""
    app.send_task(name.value, args=args, queue=queue.value)

"""The Celery app. Workers: `celery -A jobs.app worker -Q gpu,cpu`; beat: `celery -A jobs.app beat`."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from celery import Celery

_platform = Path(__file__).resolve().parent.parent / "platform"
if _platform.is_dir() and str(_platform) not in sys.path:
    sys.path.insert(0, str(_platform))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "refinery.settings.base")

from jobs.queues import Queue, TaskName  # noqa: E402
from refinery.core.tasks import app  # noqa: E402  (the web side sends through the same app)

REAPER_SCHEDULE_NAME = "refinery: reap lost stages"
NOTIFY_SCHEDULE_NAME = "refinery: deliver notifications"
SCHEDULES_SCHEDULE_NAME = "refinery: fire schedules"

app.conf.task_default_queue = Queue.CPU
app.conf.task_routes = {
    TaskName.RUN_STAGE: {"queue": Queue.GPU},
    TaskName.REAP_STAGES: {"queue": Queue.CPU},
    TaskName.DELIVER_NOTIFICATIONS: {"queue": Queue.CPU},
    TaskName.SCHEDULES_TICK: {"queue": Queue.CPU},
}
app.conf.imports = ("jobs.tasks",)


def reaper_interval_seconds() -> int:
    """How often beat runs the reaper: about twice per heartbeat, so a lost lease is found soon after it
    expires. Whole seconds: django-celery-beat stores intervals as integers."""
    from django.conf import settings

    return max(1, int(float(settings.REFINERY_HEARTBEAT_SECONDS) / 2))


def register_periodic_tasks(celery_app: Celery) -> None:
    """Put the reaper and the schedules' tick in the beat schedule.

    beat's DatabaseScheduler (django-celery-beat) writes app.conf.beat_schedule into its
    PeriodicTask/IntervalSchedule tables each time beat starts, creating or updating the
    entry by name: idempotent, no data migration, and it follows REFINERY_HEARTBEAT_SECONDS.
    """
    interval = reaper_interval_seconds()
    celery_app.add_periodic_task(
        interval,
        celery_app.signature(TaskName.REAP_STAGES.value),
        name=REAPER_SCHEDULE_NAME,
        queue=Queue.CPU.value,
        expire_seconds=int(max(1, interval)),  # django-celery-beat's name for `expires`: a stale reaper call is useless
    )
    from django.conf import settings

    notify_every = max(1, int(settings.REFINERY_NOTIFY_POLL_SECONDS))  # due webhook retries survive restarts
    celery_app.add_periodic_task(
        notify_every,
        celery_app.signature(TaskName.DELIVER_NOTIFICATIONS.value),
        name=NOTIFY_SCHEDULE_NAME,
        queue=Queue.CPU.value,
        expire_seconds=notify_every,
    )
    tick = settings.REFINERY_SCHEDULE_TICK_SECONDS  # schedules: each window is fired once (unique key)
    celery_app.add_periodic_task(
        tick,
        celery_app.signature(TaskName.SCHEDULES_TICK.value),
        name=SCHEDULES_SCHEDULE_NAME,
        queue=Queue.CPU.value,
        expire_seconds=tick,
    )


register_periodic_tasks(app)

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

app = Celery("refinery")
app.config_from_object("django.conf:settings", namespace="CELERY")


def _ensure_filesystem_broker_dirs() -> None:
    for key in ("data_folder_in", "data_folder_out", "control_folder"):
        folder = (app.conf.broker_transport_options or {}).get(key)
        if folder and str(app.conf.broker_url or "").startswith("filesystem://"):
            Path(folder).mkdir(parents=True, exist_ok=True)


_ensure_filesystem_broker_dirs()
app.conf.task_default_queue = Queue.CPU
app.conf.task_routes = {TaskName.RUN_STAGE: {"queue": Queue.GPU}, TaskName.REAP_STAGES: {"queue": Queue.CPU}}
app.conf.imports = ("jobs.tasks",)

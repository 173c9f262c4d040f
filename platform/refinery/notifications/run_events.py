"""run.failed / run.succeeded: called by refinery.runs.services when a run reaches that terminal state,
inside the transaction that moves it there."""

from __future__ import annotations

from django.urls import reverse

from refinery.notifications.kinds import EventKind
from refinery.notifications.models import NotificationEvent
from refinery.notifications.services import notify


def run_finished_notify(*, run) -> NotificationEvent | None:
    kind = {"failed": EventKind.RUN_FAILED, "succeeded": EventKind.RUN_SUCCEEDED}.get(str(run.status))
    if kind is None:
        return None
    verb = "failed" if kind == EventKind.RUN_FAILED else "succeeded"
    summary = f"Run #{run.number} {run.name!r} {verb}" + (f": {run.error}" if run.error else ".")
    return notify(
        team=run.team_id,
        kind=kind,
        payload={
            "summary": summary[:1000],
            "run": {
                "number": run.number,
                "name": run.name,
                "status": str(run.status),
                "error": run.error[:2000],
                "pipeline_id": run.pipeline_id,
                "started_at": run.started_at.isoformat() if run.started_at else None,
                "finished_at": run.finished_at.isoformat() if run.finished_at else None,
                "path": reverse("runs:detail", kwargs={"number": run.number}),
            },
        },
    )

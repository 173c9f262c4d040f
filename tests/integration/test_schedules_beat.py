"""A schedule through a real beat and a real worker: an interval schedule of a few seconds fires runs, and
with two beat processes sending the tick at once every window still fires once; after the beat was
stopped, a restarted beat fires only the latest missed window."""

from __future__ import annotations

import sys
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from refinery.runs.models import ACTIVE_STATES, Run, Status
from refinery.schedules.models import TickOutcome
from refinery.schedules.services import schedule_create
from tests.conftest import REPO_ROOT, ServiceProcess, _start
from tests.helpers import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def start_beat(name: str, *, env: dict, root) -> ServiceProcess:
    """`celery -A jobs.app beat` (django-celery-beat's DatabaseScheduler) on the test database."""
    log_path = root / f"{name}.log"
    cmd = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "jobs.app",
        "beat",
        "-l",
        "info",
        "--pidfile=",
        "-s",
        str(root / f"{name}-schedule"),
    ]
    beat = ServiceProcess(_start(cmd, log_path=log_path, env=env, cwd=REPO_ROOT), log_path)

    def sending() -> bool:
        if beat.proc.poll() is not None:
            raise RuntimeError(f"beat exited with {beat.proc.returncode}:\n{beat.log_tail()}")
        return "Sending due task refinery: fire schedules" in log_path.read_text(errors="replace")

    try:
        wait_until(sending, timeout=60, interval=0.3, message=lambda: f"beat sends no tick:\n{beat.log_tail()}")
    except BaseException:
        beat.stop()
        raise
    return beat


def test_an_interval_schedule_fires_runs_through_two_beats_without_duplicates_and_catches_up_once(
    demo_pipeline, celery_worker_process, tmp_path
):
    pipeline = demo_pipeline({"name": "sft", "method": "sft", "config": {"max_steps": 2}})
    schedule = schedule_create(
        team=pipeline.team,
        user=pipeline.created_by,
        name="every-3s",
        pipeline_id=pipeline.pk,
        trigger="interval",
        interval_seconds=3,
    )
    env = {**celery_worker_process.env, "REFINERY_SCHEDULE_TICK_SECONDS": "1"}
    beats = [start_beat(f"beat-{i}", env=env, root=tmp_path) for i in range(2)]
    try:

        def two_succeeded():
            runs = Run.objects.filter(schedule_tick__schedule=schedule)
            if runs.filter(status=Status.FAILED).exists():
                raise AssertionError(f"a scheduled run failed: {list(runs.values('number', 'error'))}")
            return runs.filter(status=Status.SUCCEEDED).count() >= 2

        wait_until(
            two_succeeded,
            timeout=300,
            interval=0.5,
            message=lambda: (
                f"{list(schedule.ticks.values('window', 'outcome', 'reason'))}\n{celery_worker_process.log_tail()}"
            ),
        )
    finally:
        for beat in beats:
            beat.stop()
    for beat in beats:  # both beats were sending the tick, each about once a second
        assert beat.log_path.read_text(errors="replace").count("Sending due task refinery: fire schedules") >= 2

    ticks = list(schedule.ticks.select_related("run").order_by("window"))
    windows = [t.window for t in ticks]
    assert len(windows) == len(set(windows))
    step = timedelta(seconds=3)
    assert all((w - schedule.created_at) % step == timedelta(0) for w in windows), windows
    fired = [t for t in ticks if t.outcome == TickOutcome.FIRED]
    runs = list(Run.objects.filter(schedule_tick__schedule=schedule))
    assert len(fired) == len(runs) == len({t.run_id for t in fired}) >= 2  # one run per fired window, no other
    assert Run.objects.filter(team=pipeline.team).count() == len(runs)
    # Windows that came while a run was going were skipped (the default policy), saying which run.
    assert all("is still" in t.reason for t in ticks if t.outcome == TickOutcome.SKIPPED)
    assert {t.outcome for t in ticks} <= {TickOutcome.FIRED, TickOutcome.SKIPPED}

    # Catch-up after a stopped beat: the beats are down for four windows; one restarted beat fires the
    # latest missed window only (catch-up "latest", the default), none of the three before it.
    wait_until(
        lambda: not Run.objects.filter(schedule_tick__schedule=schedule, status__in=ACTIVE_STATES).exists(),
        timeout=120,
        interval=0.5,
    )
    last = schedule.ticks.order_by("-window").first().window
    time.sleep(max(0.0, (last + 4 * step - timezone.now()).total_seconds()) + 0.5)
    restarted_at = timezone.now()
    beat = start_beat("beat-again", env=env, root=tmp_path)
    try:
        new = wait_until(
            lambda: list(schedule.ticks.filter(window__gt=last).order_by("window")), timeout=60, interval=0.3
        )
    finally:
        beat.stop()
    first = new[0]
    assert first.outcome == TickOutcome.FIRED and first.run is not None
    assert restarted_at - step < first.window <= restarted_at + step  # the latest missed window, or the next
    assert first.window - last >= 4 * step  # the three missed before it were not caught up

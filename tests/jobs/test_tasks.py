"""The Celery tasks and the reaper's place in beat's schedule."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from jobs.app import REAPER_SCHEDULE_NAME, app, reaper_interval_seconds
from jobs.queues import Queue, TaskName
from jobs.tasks import reap_stages, run_stage
from refinery.runs.models import StageRun, Status
from refinery.runs.services import run_create, stage_claim

pytestmark = pytest.mark.django_db


def test_tasks_have_their_names_queues_and_early_acks():
    assert run_stage.name == "jobs.run_stage" and reap_stages.name == "jobs.reap_stages"
    assert {run_stage.name, reap_stages.name} <= set(app.tasks)
    # A wake-up is acked when taken and busy workers reserve nothing: no broker redelivers or times
    # out a long stage (tests/chaos covers it with a 3 s visibility timeout).
    assert app.tasks[run_stage.name].acks_late is False
    assert app.conf.worker_disable_prefetch is True and app.conf.worker_prefetch_multiplier == 1
    assert app.amqp.router.route({}, TaskName.RUN_STAGE.value)["queue"].name == Queue.GPU
    assert app.amqp.router.route({}, TaskName.REAP_STAGES.value)["queue"].name == Queue.CPU


@pytest.mark.django_db(transaction=True)  # the scheduler closes DB connections, as beat does
def test_beat_start_installs_the_reaper_once(settings):
    """django-celery-beat's DatabaseScheduler writes the reaper into its tables at start, idempotently."""
    from django_celery_beat.models import PeriodicTask
    from django_celery_beat.schedulers import DatabaseScheduler

    for _ in range(2):  # beat started twice: still one entry
        DatabaseScheduler(app=app).setup_schedule()
    task = PeriodicTask.objects.get(name=REAPER_SCHEDULE_NAME)
    assert task.task == TaskName.REAP_STAGES and task.queue == Queue.CPU and task.enabled
    assert task.interval.every * {"seconds": 1, "minutes": 60}[task.interval.period] == reaper_interval_seconds()
    assert reaper_interval_seconds() == 2  # half the default 5 s heartbeat, in whole seconds
    assert PeriodicTask.objects.filter(task=TaskName.REAP_STAGES).count() == 1


def test_reap_stages_task_requeues_a_lost_stage(make_pipeline, sent_stages, django_capture_on_commit_callbacks):
    pipeline = make_pipeline(("a", "base"))
    with django_capture_on_commit_callbacks(execute=True):
        run = run_create(pipeline=pipeline, user=pipeline.created_by)
    stage = run.stages.get()
    stage_claim(stage_run_id=stage.pk, worker="gone:1")
    StageRun.objects.filter(pk=stage.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=5))

    with django_capture_on_commit_callbacks(execute=True):
        assert reap_stages() == [stage.pk]
    stage.refresh_from_db()
    assert stage.status == Status.QUEUED and sent_stages == [stage.pk, stage.pk]


def test_run_stage_on_a_finished_or_unknown_stage_does_nothing(make_pipeline, sent_stages):
    pipeline = make_pipeline(("a", "base"))
    run = run_create(pipeline=pipeline, user=pipeline.created_by)
    stage = run.stages.get()
    StageRun.objects.filter(pk=stage.pk).update(status=Status.CANCELED)
    assert run_stage(stage.pk) is None
    assert run_stage(10**9) is None


def test_a_stage_queued_too_long_gets_its_wake_up_again_once(make_pipeline, sent_stages, settings):
    from refinery.runs.services import stage_redispatch_stale

    settings.REFINERY_REDISPATCH_SECONDS = 60
    pipeline = make_pipeline(("a", "base"))
    run = run_create(pipeline=pipeline, user=pipeline.created_by)
    stage = run.stages.get()
    sent_stages.clear()
    assert stage_redispatch_stale() == []  # just queued: its message is on its way
    StageRun.objects.filter(pk=stage.pk).update(dispatched_at=timezone.now() - timedelta(seconds=61))
    assert stage_redispatch_stale() == [stage.pk] and sent_stages == [stage.pk]
    assert stage_redispatch_stale() == []  # re-sent once per interval, not on every reaper tick
    StageRun.objects.filter(pk=stage.pk).update(
        status=Status.RUNNING, dispatched_at=timezone.now() - timedelta(seconds=600)
    )
    assert stage_redispatch_stale() == []  # claimed stages are the lease's business

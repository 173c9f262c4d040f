"""Schedule services: one run per window, overlap policies, auto-pause, dataset trigger, bindings."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from refinery.data.models import DatasetVersion
from refinery.runs.models import Run, Status
from refinery.schedules.models import Schedule, ScheduleTick, TickOutcome
from refinery.schedules.services import (
    ScheduleError,
    schedule_create,
    schedule_pause,
    schedule_resume,
    schedule_run_now,
    schedule_tick_all,
    schedule_update,
)
from tests.factories import DatasetVersionFactory

# Far after any real "now": rows the factories create at the real time (dataset versions, a resume) must come
# before the schedule's windows, as they would in production.
T0 = datetime(2036, 12, 5, 1, 0, tzinfo=UTC)


def make_schedule(pipeline, *, created_at=T0, **fields) -> Schedule:
    fields = {
        "name": "nightly-sft",
        "pipeline_id": pipeline.pk,
        "trigger": "interval",
        "interval_seconds": 60,
        **fields,
    }
    schedule = schedule_create(team=pipeline.team, user=pipeline.created_by, **fields)
    Schedule.objects.filter(pk=schedule.pk).update(created_at=created_at)
    schedule.refresh_from_db()
    return schedule


def runs_of(schedule) -> list[Run]:
    return list(Run.objects.filter(schedule_tick__schedule=schedule).order_by("number"))


def finish(run: Run, status=Status.SUCCEEDED) -> None:
    Run.objects.filter(pk=run.pk).update(status=status)


@pytest.mark.django_db
class TestFiring:
    def test_a_window_fires_one_run_of_the_pinned_version_and_only_once(self, make_pipeline, sent_stages):
        pipeline = make_pipeline(("a", "base"))
        schedule = make_schedule(pipeline)
        pinned = schedule.pipeline_version
        pipeline.spec["seed"] = 99  # a later edit of the pipeline does not change what the schedule runs
        pipeline.version += 1
        pipeline.save()

        ticks = schedule_tick_all(T0 + timedelta(seconds=30))
        assert [(t.window, t.outcome) for t in ticks] == [(T0, TickOutcome.FIRED)]
        run = ticks[0].run
        assert run.pipeline_version == pinned and run.created_by is None
        assert run.schedule_tick.schedule == schedule
        assert schedule_tick_all(T0 + timedelta(seconds=59)) == []  # same window again: nothing
        assert len(runs_of(schedule)) == 1

    def test_the_unique_key_refuses_a_second_tick_for_a_window(self, make_pipeline, sent_stages):
        schedule = make_schedule(make_pipeline(("a", "base")))
        ScheduleTick.objects.create(schedule=schedule, window=T0, outcome=TickOutcome.SKIPPED)
        with pytest.raises(IntegrityError), transaction.atomic():
            ScheduleTick.objects.create(schedule=schedule, window=T0, outcome=TickOutcome.FIRED)
        # A beat that did not see the first row computes the same window: it fires nothing.
        from refinery.schedules.services import _window_handle

        assert _window_handle(schedule_id=schedule.pk, window=T0) is None
        assert runs_of(schedule) == []

    def test_a_pass_that_computed_before_the_lock_rechecks_under_it(self, make_pipeline, sent_stages):
        """A second pass computed its windows before the first committed: under the schedule's lock it finds
        a later window handled, max_runs used up, or the schedule paused, and fires nothing."""
        from refinery.schedules.services import _window_handle

        schedule = make_schedule(make_pipeline(("a", "base")), overlap="replace", max_runs=2)
        assert _window_handle(schedule_id=schedule.pk, window=T0 + timedelta(minutes=2)).run is not None
        assert _window_handle(schedule_id=schedule.pk, window=T0 + timedelta(minutes=1)) is None  # older
        assert _window_handle(schedule_id=schedule.pk, window=T0 + timedelta(minutes=3)).run is not None
        assert _window_handle(schedule_id=schedule.pk, window=T0 + timedelta(minutes=4)) is None  # max_runs
        Schedule.objects.filter(pk=schedule.pk).update(max_runs=None, paused=True)
        assert _window_handle(schedule_id=schedule.pk, window=T0 + timedelta(minutes=5)) is None  # paused
        assert len(runs_of(schedule)) == 2

    def test_pause_stops_firing_and_resume_does_not_catch_up(self, make_pipeline, sent_stages, monkeypatch):
        schedule = make_schedule(make_pipeline(("a", "base")), catch_up="all")
        schedule_tick_all(T0)
        schedule_pause(schedule=schedule, user=schedule.created_by)
        assert schedule_tick_all(T0 + timedelta(minutes=10)) == []
        monkeypatch.setattr(timezone, "now", lambda: T0 + timedelta(minutes=10, seconds=30))
        schedule_resume(schedule=schedule, user=schedule.created_by)
        assert schedule_tick_all(T0 + timedelta(minutes=10, seconds=40)) == []  # no flood of 10 windows
        ticks = schedule_tick_all(T0 + timedelta(minutes=11))
        assert [t.window for t in ticks] == [T0 + timedelta(minutes=11)]

    def test_catch_up_after_a_stopped_beat(self, make_pipeline, sent_stages):
        latest = make_schedule(make_pipeline(("a", "base")), name="latest")
        every = make_schedule(
            make_pipeline(("a", "base")), name="every", catch_up="all", catch_up_limit=3, overlap="replace"
        )
        ticks = schedule_tick_all(T0 + timedelta(minutes=5, seconds=1))
        assert [t.window for t in ticks if t.schedule_id == latest.pk] == [T0 + timedelta(minutes=5)]
        assert [t.window for t in ticks if t.schedule_id == every.pk] == [T0 + timedelta(minutes=m) for m in (3, 4, 5)]

    def test_max_runs_and_end(self, make_pipeline, sent_stages):
        schedule = make_schedule(make_pipeline(("a", "base")), max_runs=2, overlap="replace")
        for minute in range(5):
            schedule_tick_all(T0 + timedelta(minutes=minute))
        assert len(runs_of(schedule)) == 2

    def test_run_now_fires_even_when_paused_and_twice(self, make_pipeline, sent_stages):
        schedule = make_schedule(make_pipeline(("a", "base")), paused=True)
        first = schedule_run_now(schedule=schedule, user=schedule.created_by)
        second = schedule_run_now(schedule=schedule, user=schedule.created_by)
        assert first.manual and first.outcome == TickOutcome.FIRED and first.run.created_by == schedule.created_by
        assert second.run != first.run and second.window > first.window
        assert schedule_tick_all(timezone.now()) == []  # paused: the beat fires nothing

    def test_a_run_that_cannot_start_is_a_failed_tick(self, make_pipeline, sent_stages):
        pipeline = make_pipeline(("a", "base"))
        schedule = make_schedule(pipeline)
        DatasetVersion.objects.filter(dataset__team=pipeline.team).delete()
        [tick] = schedule_tick_all(T0)
        assert tick.outcome == TickOutcome.FAILED and "has no version yet" in tick.reason and tick.run is None


@pytest.mark.django_db
class TestOverlap:
    def test_skip_is_the_default(self, make_pipeline, sent_stages):
        schedule = make_schedule(make_pipeline(("a", "base")))
        [first] = schedule_tick_all(T0)
        [second] = schedule_tick_all(T0 + timedelta(minutes=1))
        assert second.outcome == TickOutcome.SKIPPED and second.run is None
        assert f"run #{first.run.number} is still queued" in second.reason
        finish(first.run)
        [third] = schedule_tick_all(T0 + timedelta(minutes=2))
        assert third.outcome == TickOutcome.FIRED

    def test_queue_keeps_at_most_one_waiting_and_starts_it_after(self, make_pipeline, sent_stages):
        schedule = make_schedule(make_pipeline(("a", "base")), overlap="queue")
        [first] = schedule_tick_all(T0)
        [waiting] = schedule_tick_all(T0 + timedelta(minutes=1))
        [third] = schedule_tick_all(T0 + timedelta(minutes=2))
        assert waiting.outcome == TickOutcome.QUEUED and third.outcome == TickOutcome.SKIPPED
        assert "already waiting" in third.reason
        assert schedule_tick_all(T0 + timedelta(minutes=2, seconds=30)) == []  # still running: still waiting
        finish(first.run, Status.FAILED)
        schedule_tick_all(T0 + timedelta(minutes=2, seconds=40))
        waiting.refresh_from_db()
        assert waiting.outcome == TickOutcome.FIRED and waiting.run is not None
        assert "started when it finished" in waiting.reason
        assert len(runs_of(schedule)) == 2

    def test_replace_cancels_the_running_one(self, make_pipeline, sent_stages):
        schedule = make_schedule(make_pipeline(("a", "base")), overlap="replace")
        [first] = schedule_tick_all(T0)
        [second] = schedule_tick_all(T0 + timedelta(minutes=1))
        first.run.refresh_from_db()
        assert first.run.status == Status.CANCELED
        assert second.outcome == TickOutcome.FIRED and second.run.status == Status.QUEUED
        assert f"canceled run #{first.run.number}" in second.reason


@pytest.mark.django_db
def test_auto_pause_after_n_failed_runs_in_a_row(make_pipeline, sent_stages, monkeypatch):
    schedule = make_schedule(make_pipeline(("a", "base")), failure_limit=2)
    [a] = schedule_tick_all(T0)
    finish(a.run, Status.FAILED)
    [b] = schedule_tick_all(T0 + timedelta(minutes=1))
    finish(b.run, Status.SUCCEEDED)  # a success breaks the chain
    [c] = schedule_tick_all(T0 + timedelta(minutes=2))
    finish(c.run, Status.FAILED)
    [d] = schedule_tick_all(T0 + timedelta(minutes=3))
    finish(d.run, Status.FAILED)
    assert schedule_tick_all(T0 + timedelta(minutes=4)) == []
    schedule.refresh_from_db()
    assert schedule.paused
    assert schedule.paused_reason == (
        f"paused itself after 2 failed runs in a row (run #{c.run.number}, run #{d.run.number})"
    )
    assert schedule.team.audit_events.filter(action="schedule.auto_paused").exists()
    from refinery.notifications.models import NotificationEvent

    [event] = NotificationEvent.objects.filter(team=schedule.team, kind="schedule.paused")
    assert event.payload["schedule"]["name"] == schedule.name and "2 failed runs" in event.payload["reason"]
    # Resumed: the old failures no longer count, it fires again.
    monkeypatch.setattr(timezone, "now", lambda: T0 + timedelta(minutes=4, seconds=30))
    schedule_resume(schedule=schedule, user=schedule.created_by)
    [e] = schedule_tick_all(T0 + timedelta(minutes=5))
    assert e.outcome == TickOutcome.FIRED


@pytest.mark.django_db
class TestDatasetTrigger:
    def _upload(self, dataset, at):
        version = DatasetVersionFactory(dataset=dataset)
        DatasetVersion.objects.filter(pk=version.pk).update(created_at=at)
        return version

    def test_two_uploads_inside_the_debounce_start_one_run(self, make_pipeline, sent_stages):
        pipeline = make_pipeline(("a", "base"))
        dataset = pipeline.team.datasets.get()
        schedule = make_schedule(pipeline, trigger="dataset", debounce_seconds=60)
        assert schedule_tick_all(T0 + timedelta(hours=1)) == []  # the version from before the schedule
        self._upload(dataset, T0 + timedelta(hours=2))
        assert schedule_tick_all(T0 + timedelta(hours=2, seconds=30)) == []
        newest = self._upload(dataset, T0 + timedelta(hours=2, seconds=40))
        assert schedule_tick_all(T0 + timedelta(hours=2, seconds=61)) == []  # the debounce restarted
        [tick] = schedule_tick_all(T0 + timedelta(hours=2, seconds=100))
        assert tick.window == T0 + timedelta(hours=2, seconds=100)
        assert tick.run.snapshot["stages"][0]["train_data"]["version_id"] == newest.pk
        assert schedule_tick_all(T0 + timedelta(hours=3)) == []  # nothing new: no second run
        self._upload(dataset, T0 + timedelta(hours=4))
        finish(tick.run)
        assert len(schedule_tick_all(T0 + timedelta(hours=4, minutes=5))) == 1

    def test_uploads_through_the_upload_service_start_exactly_one_run(self, make_pipeline, sent_stages):
        """The real upload path (validated in a child process): two uploads in a row, one run after the
        debounce, reading the second upload."""
        import json

        from refinery.data.services import dataset_version_create

        pipeline = make_pipeline(("a", "base"))
        dataset = pipeline.team.datasets.get()
        schedule = make_schedule(pipeline, trigger="dataset", debounce_seconds=30, created_at=timezone.now())
        for n in (1, 2):
            rows = "".join(json.dumps({"prompt": f"{i}+{n}=", "completion": str(i + n)}) + "\n" for i in range(5))
            dataset_version_create(
                team=pipeline.team,
                user=pipeline.created_by,
                name=dataset.name,
                kind=dataset.kind,
                filename="more.jsonl",
                chunks=[rows.encode()],
            )
        newest = dataset.latest_version
        assert newest.version == 3
        assert schedule_tick_all(timezone.now()) == []  # inside the debounce
        later = newest.created_at + timedelta(seconds=31)
        [tick] = schedule_tick_all(later)
        assert tick.run.snapshot["stages"][0]["train_data"]["version_id"] == newest.pk
        assert schedule_tick_all(later + timedelta(minutes=5)) == []
        assert len(runs_of(schedule)) == 1

    def test_a_pinned_dataset_stays_pinned_and_needs_a_latest_binding_to_trigger(self, make_pipeline, sent_stages):
        pipeline = make_pipeline(("a", "base"))
        dataset = pipeline.team.datasets.get()
        old = dataset.versions.get()
        DatasetVersionFactory(dataset=dataset)
        with pytest.raises(ScheduleError, match='bound to "latest"'):
            make_schedule(pipeline, trigger="dataset", bindings={str(dataset.pk): old.pk})
        schedule = make_schedule(pipeline, bindings={str(dataset.pk): old.pk})
        [tick] = schedule_tick_all(T0)
        assert tick.run.snapshot["stages"][0]["train_data"]["version_id"] == old.pk


@pytest.mark.django_db
class TestValidation:
    def test_bad_input_names_the_field_and_writes_nothing(self, make_pipeline):
        pipeline = make_pipeline(("a", "base"))
        other = make_pipeline(("a", "base"))
        dataset = pipeline.team.datasets.get()
        foreign = other.team.datasets.get().versions.get()
        cases = [
            ({"pipeline_id": other.pk}, "pipeline_id", "does not exist in this team"),
            ({"trigger": "cron", "cron": "61 * * * *"}, "cron", "five-field"),
            ({"trigger": "cron", "cron": "0 2 * * *", "timezone": "Mars/Olympus"}, "timezone", "unknown time zone"),
            ({"interval_seconds": 0}, "interval_seconds", "between 1"),
            ({"interval_seconds": None}, "interval_seconds", "required"),
            ({"overlap": "allow"}, "overlap", "skip, queue, replace"),
            ({"bindings": {"999999": "latest"}}, "bindings", "does not read dataset #999999"),
            ({"bindings": {str(dataset.pk): foreign.pk}}, "bindings", f"no version with id {foreign.pk}"),
            ({"version": 42}, "version", "has no version 42"),
            ({"start_at": T0, "end_at": T0}, "end_at", "after the start"),
        ]
        for fields, field, message in cases:
            with pytest.raises(ScheduleError) as exc:
                make_schedule(pipeline, **fields)
            assert message in exc.value.errors[field], (fields, exc.value.errors)
        assert not Schedule.objects.exists()
        make_schedule(pipeline)
        with pytest.raises(ScheduleError, match="already exists"):
            make_schedule(pipeline)

    def test_update_changes_fields_and_audits(self, make_pipeline):
        pipeline = make_pipeline(("a", "base"))
        schedule = make_schedule(pipeline)
        schedule_update(
            schedule=schedule,
            user=pipeline.created_by,
            name="weekly",
            pipeline_id=pipeline.pk,
            trigger="cron",
            cron="0  2 * * 1",
            timezone="Europe/Paris",
        )
        schedule.refresh_from_db()
        assert (schedule.name, schedule.cron, schedule.interval_seconds) == ("weekly", "0 2 * * 1", None)
        event = pipeline.team.audit_events.get(action="schedule.updated")
        assert "cron" in event.detail["changed"] and "name" in event.detail["changed"]


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_passes_fire_each_window_once(make_pipeline, sent_stages):
    """Two beats (threads with their own PostgreSQL connections) pass over the same windows at once."""
    assert connection.vendor == "postgresql"
    schedules = [
        make_schedule(make_pipeline(("a", "base")), name=f"s{i}", catch_up="all", catch_up_limit=5, overlap="replace")
        for i in range(3)
    ]
    now = T0 + timedelta(minutes=4, seconds=1)
    barrier, errors, results = threading.Barrier(2), [], []

    def beat():
        from django.db import connection as conn

        try:
            barrier.wait()
            for minute in (3, 4):
                results.extend(schedule_tick_all(now - timedelta(minutes=4 - minute)))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=beat) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    for schedule in schedules:
        windows = list(schedule.ticks.values_list("window", flat=True))
        assert len(windows) == len(set(windows)) == 5
        assert len(runs_of(schedule)) == 5  # one run per window, none twice
    assert len(results) == 15  # each window handled by exactly one of the two passes
    assert Run.objects.count() == 15


@pytest.mark.django_db(transaction=True)
def test_beat_start_installs_the_schedules_tick_once():
    from django.conf import settings
    from django_celery_beat.models import PeriodicTask
    from django_celery_beat.schedulers import DatabaseScheduler

    from jobs.app import SCHEDULES_SCHEDULE_NAME, app
    from jobs.queues import Queue, TaskName

    for _ in range(2):
        DatabaseScheduler(app=app).setup_schedule()
    task = PeriodicTask.objects.get(name=SCHEDULES_SCHEDULE_NAME)
    assert task.task == TaskName.SCHEDULES_TICK == "jobs.schedules_tick" and task.queue == Queue.CPU
    assert task.interval.every == settings.REFINERY_SCHEDULE_TICK_SECONDS
    assert app.amqp.router.route({}, TaskName.SCHEDULES_TICK.value)["queue"].name == Queue.CPU
    assert PeriodicTask.objects.filter(task=TaskName.SCHEDULES_TICK).count() == 1

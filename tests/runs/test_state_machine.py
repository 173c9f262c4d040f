"""The run/stage state machine: creation, advancing, failure, cancel, the reaper, duplicate deliveries."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.utils import timezone

from refinery.runs.models import IllegalTransition, Run, StageRun, Status
from refinery.runs.services import (
    run_cancel,
    run_create,
    stage_claim,
    stage_finish,
    stage_heartbeat,
    stage_reap_expired,
)


@pytest.fixture
def start(django_capture_on_commit_callbacks, sent_stages):
    """start(pipeline) -> Run, with the after-commit wake-ups executed (and recorded in sent_stages)."""

    def run(pipeline, **kwargs) -> Run:
        with django_capture_on_commit_callbacks(execute=True):
            return run_create(pipeline=pipeline, user=pipeline.created_by, **kwargs)

    return run


def stages_of(run: Run) -> dict[str, StageRun]:
    return {s.name: s for s in run.stages.order_by("index")}


def finish(stage: StageRun, status: str, capture, **kwargs) -> StageRun:
    with capture(execute=True):
        return stage_finish(stage_run_id=stage.pk, status=status, **kwargs)


def expire_lease(stage: StageRun) -> None:
    StageRun.objects.filter(pk=stage.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))


# --- guarded transitions ---------------------------------------------------------------------


@pytest.mark.django_db
def test_illegal_transitions_are_refused(make_pipeline, start):
    run = start(make_pipeline(("a", "base"), ("b", "a")))
    a, b = stages_of(run).values()

    with pytest.raises(IllegalTransition):
        b.mark_running(worker="w", lease_seconds=30)  # pending -> running skips the queue
    with pytest.raises(IllegalTransition):
        stage_finish(stage_run_id=a.pk, status=Status.SUCCEEDED)  # queued -> succeeded never ran
    with pytest.raises(IllegalTransition):
        a.mark_finished(Status.RUNNING)  # not a terminal state

    a.refresh_from_db()
    assert a.status == Status.QUEUED and a.finished_at is None
    stage_claim(stage_run_id=a.pk, worker="w")
    stage_finish(stage_run_id=a.pk, status=Status.FAILED, error="boom")
    a.refresh_from_db()
    for move in (a.mark_queued, a.mark_canceling):
        with pytest.raises(IllegalTransition):
            move()
    with pytest.raises(IllegalTransition):
        stage_finish(stage_run_id=a.pk, status=Status.SUCCEEDED)  # terminal stays terminal
    a.refresh_from_db()
    assert a.status == Status.FAILED and a.error == "boom"


# --- creation and advancing ------------------------------------------------------------------


@pytest.mark.django_db
def test_run_create_snapshots_everything_and_queues_only_the_first_stage(make_pipeline, start, sent_stages):
    pipeline = make_pipeline(("a", "base"), ("b", "a"))
    version = pipeline.team.datasets.get().latest_version
    run = start(pipeline)

    a, b = stages_of(run).values()
    assert (a.status, b.status) == (Status.QUEUED, Status.PENDING)
    assert sent_stages == [a.pk]
    assert run.status == Status.QUEUED and run.number == 1 and run.seed == 3

    snap = run.snapshot
    assert snap["base_model"]["name_or_path"] == pipeline.base_model.name_or_path
    assert snap["code_version"] == run.code_version
    train = snap["stages"][0]["train_data"]
    assert (train["sha256"], train["version"], train["storage_path"]) == (
        version.sha256,
        version.version,
        version.storage_path,
    )
    # Configs are frozen resolved: defaults the pipeline never named are in the snapshot.
    assert snap["stages"][0]["config"]["max_steps"] == 2
    assert "learning_rate" in snap["stages"][0]["config"]
    assert a.spec["input"] == "base" and b.spec["input"] == "a"

    # Editing the pipeline afterwards changes nothing in the run.
    pipeline.spec = {"seed": 9, "stages": pipeline.spec["stages"][:1]}
    pipeline.save()
    run.refresh_from_db()
    assert run.snapshot == snap and run.stages.count() == 2

    second = start(pipeline)
    assert second.number == 2


@pytest.mark.django_db
def test_stage_finish_advances_to_the_next_stage_and_ends_the_run(
    make_pipeline, start, sent_stages, django_capture_on_commit_callbacks
):
    run = start(make_pipeline(("a", "base"), ("b", "a")))
    a, b = stages_of(run).values()

    claimed = stage_claim(stage_run_id=a.pk, worker="w1")
    assert claimed.status == Status.RUNNING and claimed.attempt == 1 and claimed.lease_expires_at
    run.refresh_from_db()
    assert run.status == Status.RUNNING and run.started_at

    finish(
        a,
        Status.SUCCEEDED,
        django_capture_on_commit_callbacks,
        outputs={"kind": "model", "artifact_path": "model", "mlflow_run_id": "x"},
        summary={"train/loss": 0.5},
    )
    b.refresh_from_db()
    assert b.status == Status.QUEUED and sent_stages == [a.pk, b.pk]
    run.refresh_from_db()
    assert run.status == Status.RUNNING and run.finished_at is None

    stage_claim(stage_run_id=b.pk, worker="w2")
    finish(b, Status.SUCCEEDED, django_capture_on_commit_callbacks)
    run.refresh_from_db()
    assert run.status == Status.SUCCEEDED and run.finished_at is not None
    assert StageRun.objects.get(pk=a.pk).summary == {"train/loss": 0.5}


@pytest.mark.django_db
def test_failure_cancels_dependents_and_the_run_fails_once_other_branches_end(
    make_pipeline, start, sent_stages, django_capture_on_commit_callbacks
):
    # a -> b -> c, and d on its own branch
    run = start(make_pipeline(("a", "base"), ("b", "a"), ("c", "b"), ("d", "base")))
    s = stages_of(run)
    assert sorted(sent_stages) == sorted([s["a"].pk, s["d"].pk])
    stage_claim(stage_run_id=s["a"].pk, worker="w1")
    stage_claim(stage_run_id=s["d"].pk, worker="w2")

    finish(s["a"], Status.FAILED, django_capture_on_commit_callbacks, error="CUDA out of memory", log_tail="...")
    s = stages_of(run)
    assert s["a"].status == Status.FAILED and s["a"].log_tail == "..."
    assert s["b"].status == s["c"].status == Status.CANCELED
    assert "not run" in s["b"].error and "'a'" in s["b"].error
    assert s["d"].status == Status.RUNNING
    run.refresh_from_db()
    assert run.status == Status.RUNNING  # d is still working

    finish(s["d"], Status.SUCCEEDED, django_capture_on_commit_callbacks)
    run.refresh_from_db()
    assert run.status == Status.FAILED and run.finished_at
    assert "CUDA out of memory" in run.error and "'a'" in run.error


# --- cancel ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_cancel_ends_waiting_stages_at_once_and_asks_the_running_one_to_stop(
    make_pipeline, start, django_capture_on_commit_callbacks
):
    run = start(make_pipeline(("a", "base"), ("b", "a"), ("c", "base")))
    s = stages_of(run)
    stage_claim(stage_run_id=s["a"].pk, worker="w1")  # a running, b pending, c queued

    run_cancel(run=run)
    s = stages_of(run)
    assert s["a"].status == Status.CANCELING and s["a"].cancel_requested_at
    assert s["b"].status == Status.CANCELED and s["c"].status == Status.CANCELED
    run.refresh_from_db()
    assert run.status == Status.CANCELING

    ours, cancel = stage_heartbeat(stage_run_id=s["a"].pk, worker="w1", attempt=1, step=3)
    assert ours and cancel
    assert stage_claim(stage_run_id=s["c"].pk, worker="w2") is None  # a late wake-up runs nothing

    finish(s["a"], Status.CANCELED, django_capture_on_commit_callbacks)
    run.refresh_from_db()
    assert run.status == Status.CANCELED and run.finished_at
    with pytest.raises(IllegalTransition):
        run_cancel(run=run)


@pytest.mark.django_db
def test_cancel_of_a_queued_run_finishes_it_immediately(make_pipeline, start):
    run = start(make_pipeline(("a", "base")))
    run_cancel(run=run)
    run.refresh_from_db()
    assert run.status == Status.CANCELED
    assert run.stages.get().status == Status.CANCELED


# --- reaper ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_reaper_requeues_an_expired_lease_with_the_next_attempt_then_gives_up(
    make_pipeline, start, sent_stages, django_capture_on_commit_callbacks
):
    run = start(make_pipeline(("a", "base"), ("b", "a")))
    a, b = stages_of(run).values()
    StageRun.objects.filter(pk=a.pk).update(max_attempts=2)

    stage_claim(stage_run_id=a.pk, worker="w1")
    with django_capture_on_commit_callbacks(execute=True):
        assert stage_reap_expired() == []  # a live lease is left alone
    expire_lease(a)
    with django_capture_on_commit_callbacks(execute=True):
        assert stage_reap_expired() == [a.pk]
    a.refresh_from_db()
    assert a.status == Status.QUEUED and a.worker == "" and a.attempt == 1
    assert "lease expired" in a.error and sent_stages == [a.pk, a.pk]

    # The old worker comes back: its lease is gone, and it may not finish the stage.
    assert stage_heartbeat(stage_run_id=a.pk, worker="w1", attempt=1) == (False, False)

    again = stage_claim(stage_run_id=a.pk, worker="w2")
    assert again.attempt == 2 and again.error == ""
    with pytest.raises(IllegalTransition):
        stage_finish(stage_run_id=a.pk, status=Status.SUCCEEDED, attempt=1)
    expire_lease(a)
    with django_capture_on_commit_callbacks(execute=True):
        assert stage_reap_expired() == [a.pk]
    a.refresh_from_db()
    b.refresh_from_db()
    assert a.status == Status.FAILED and "gave up after 2 attempts" in a.error
    assert b.status == Status.CANCELED
    run.refresh_from_db()
    assert run.status == Status.FAILED
    assert sent_stages == [a.pk, a.pk]  # no third attempt


@pytest.mark.django_db
def test_reaper_finishes_a_lost_stage_that_was_being_canceled(make_pipeline, start):
    run = start(make_pipeline(("a", "base")))
    a = run.stages.get()
    stage_claim(stage_run_id=a.pk, worker="w1")
    run_cancel(run=run)
    expire_lease(a)
    assert stage_reap_expired() == [a.pk]
    a.refresh_from_db()
    run.refresh_from_db()
    assert a.status == Status.CANCELED and run.status == Status.CANCELED


# --- concurrency -----------------------------------------------------------------------------


def _in_threads(count: int, target) -> list:
    """Run target(i) in `count` threads released together; return their results (or raise theirs)."""
    from django.db import connection

    barrier = threading.Barrier(count)
    results: list = [None] * count
    errors: list = []

    def body(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[i] = target(i)
        except Exception as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=body, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    if errors:
        raise errors[0]
    return results


@pytest.mark.django_db(transaction=True)
def test_concurrent_claims_give_the_stage_to_exactly_one_worker(make_pipeline, start):
    run = start(make_pipeline(("a", "base")))
    a = run.stages.get()
    claims = _in_threads(4, lambda i: stage_claim(stage_run_id=a.pk, worker=f"w{i}"))
    winners = [c for c in claims if c is not None]
    assert len(winners) == 1
    a.refresh_from_db()
    assert a.status == Status.RUNNING and a.attempt == 1 and a.worker == winners[0].worker


@pytest.mark.django_db(transaction=True)
def test_parallel_stages_finishing_at_the_same_time_end_the_run(make_pipeline, start):
    """Each finish re-derives the run's status from all stages; the run lock keeps both from reading stale rows."""
    for _ in range(3):
        run = start(make_pipeline(("a", "base"), ("b", "base")))
        a, b = stages_of(run).values()
        stage_claim(stage_run_id=a.pk, worker="w1")
        stage_claim(stage_run_id=b.pk, worker="w2")
        _in_threads(2, lambda i: stage_finish(stage_run_id=(a, b)[i].pk, status=Status.SUCCEEDED))
        run.refresh_from_db()
        assert run.status == Status.SUCCEEDED


@pytest.mark.django_db(transaction=True)
def test_a_duplicate_delivery_runs_the_stage_once(demo_pipeline, sent_stages, mlflow_server):
    """Two deliveries at once (threads) and one after the end: the trainer runs exactly once."""
    from jobs.tasks import run_stage
    from refinery.tracking.client import metric_history
    from refinery.tracking.runs import runs_for_stage

    pipeline = demo_pipeline({"name": "sft", "method": "sft", "config": {"max_steps": 6}})
    run = run_create(pipeline=pipeline, user=pipeline.created_by)
    stage = run.stages.get()

    results = _in_threads(2, lambda i: run_stage(stage.pk))
    assert sorted(results, key=str) == sorted([None, Status.SUCCEEDED], key=str)
    assert run_stage(stage.pk) is None  # a redelivery after the end

    stage.refresh_from_db()
    assert stage.status == Status.SUCCEEDED and stage.attempt == 1
    # One trainer execution: one MLflow run for the stage, one point per step, one started line.
    assert len(runs_for_stage(stage=stage)) == 1
    assert [s for s, _ in metric_history(stage.mlflow_run_id, "train/loss")] == [1, 2, 3, 4, 5, 6]
    assert sent_stages == [stage.pk]

"""Fair share with real Celery workers over Redis, the real trainer and MLflow: a team queued behind another
team's 20-run sweep is served within the next two claims, and a running-stage limit holds a team at N
while another team's stages run beside it."""

from __future__ import annotations

import os
import time

import pytest

from refinery.runs.models import IllegalTransition, Run, StageRun, Status
from refinery.runs.services import run_cancel, run_create
from refinery.sweeps.services import sweep_create
from refinery.teams.models import TeamQuota
from tests.helpers import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

QUICK = {"max_steps": 2, "logging_steps": 1}
BUSY = ("running", "canceling")


def _one_stage(demo_pipeline, name: str):
    return demo_pipeline({"name": "sft", "method": "sft", "config": QUICK}, name=name)


def _broker_backlog(prefix: str) -> int:
    from tests.conftest import _redis_client

    client = _redis_client()
    return sum(client.llen(key) for key in client.scan_iter(match=f"{prefix}gpu*") if client.type(key) == b"list")


def _wind_down(teams, prefix: str) -> None:
    """Cancel what is left of the teams' runs, then wait until no stage runs and the broker holds no wake-up,
    so that no message of this test claims a later test's stage."""
    for run in Run.objects.filter(team__in=teams, status__in=["queued", "running"]):
        try:
            run_cancel(run=run)
        except IllegalTransition:
            pass
    wait_until(
        lambda: not StageRun.objects.filter(status__in=BUSY).exists() and _broker_backlog(prefix) == 0,
        timeout=120,
        interval=0.5,
        message="the workers did not go idle",
    )
    time.sleep(1.0)  # a wake-up taken just before the backlog emptied finishes its (no-op) claim
    assert not StageRun.objects.filter(status__in=BUSY).exists()


def test_a_team_behind_another_teams_20_run_sweep_is_among_the_next_two_claims(
    celery_worker_process, mlflow_server, demo_pipeline, _isolated_broker
):
    a = _one_stage(demo_pipeline, "a-sweep")
    b = _one_stage(demo_pipeline, "b-single")
    started = time.monotonic()
    try:
        sweep = sweep_create(
            pipeline=a,
            user=a.created_by,
            name="lr",
            mode="grid",
            metric="sft/train/loss",
            goal="min",
            parameters=[{"path": "sft.config.learning_rate", "values": [f"{i}e-4" for i in range(1, 21)]}],
        )
        assert sweep.trials.count() == 20
        # B arrives while A's sweep holds the worker and 19 of A's stages wait in the queue before it.
        wait_until(
            lambda: StageRun.objects.filter(run__team=a.team, status__in=BUSY).exists(),
            timeout=120,
            message=lambda: f"A's first stage never started:\n{celery_worker_process.log_tail(40)}",
        )
        b_stage = run_create(pipeline=b, user=b.created_by).stages.get()
        b_queued = StageRun.objects.get(pk=b_stage.pk).queued_at
        wait_until(
            lambda: StageRun.objects.get(pk=b_stage.pk).is_finished,
            timeout=240,
            interval=0.5,
            message=lambda: f"B's stage never ran:\n{celery_worker_process.log_tail(60)}",
        )
        b_stage.refresh_from_db()
        after = list(
            StageRun.objects.filter(started_at__gte=b_queued)
            .order_by("started_at")
            .values_list("pk", "run__team__name")
        )
        a_waiting = StageRun.objects.filter(run__team=a.team, status="queued").count()
        print(
            f"\n[measure] B queued behind {a_waiting + len(after) - 1}+ of A's stages; claims after B was queued: "
            f"{[team for _, team in after]}; B claimed "
            f"{(b_stage.started_at - b_queued).total_seconds():.1f}s after queuing "
            f"({time.monotonic() - started:.0f}s into the test)"
        )
        assert b_stage.status == Status.SUCCEEDED, (b_stage.error, b_stage.log_tail)
        assert b_stage.pk in [pk for pk, _ in after[:2]]
        assert a_waiting >= 15  # first-come-first-served would have run all of these before B
    finally:
        _wind_down([a.team, b.team], _isolated_broker)


def test_a_running_stage_limit_keeps_a_team_at_n_while_another_team_runs(
    celery_worker_process, mlflow_server, demo_pipeline, _isolated_broker, tmp_path
):
    from tests.conftest import start_celery_worker

    second = start_celery_worker(f"pytest-{os.getpid()}-fair", env=celery_worker_process.env, root=tmp_path)
    a = _one_stage(demo_pipeline, "a-limited")
    b = _one_stage(demo_pipeline, "b-free")
    TeamQuota.objects.create(team=a.team, running_stages=1)
    seen_a_running, waiting_messages = 0, set()
    try:
        runs = [run_create(pipeline=a, user=a.created_by) for _ in range(3)]
        runs += [run_create(pipeline=b, user=b.created_by) for _ in range(2)]
        deadline = time.monotonic() + 300
        while not all(r.is_finished for r in Run.objects.filter(pk__in=[r.pk for r in runs])):
            assert time.monotonic() < deadline, f"runs did not finish:\n{celery_worker_process.log_tail(60)}"
            seen_a_running = max(seen_a_running, StageRun.objects.filter(run__team=a.team, status__in=BUSY).count())
            waiting_messages |= set(
                StageRun.objects.filter(run__team=a.team, status="queued").values_list("error", flat=True)
            )
            time.sleep(0.1)
        a_stages = list(StageRun.objects.filter(run__team=a.team).order_by("started_at"))
        b_stages = list(StageRun.objects.filter(run__team=b.team).order_by("started_at"))
        assert all(s.status == Status.SUCCEEDED for s in a_stages + b_stages)
        # Team A never had two stages at once: each of its stages started after the previous one ended.
        assert all(later.started_at >= earlier.finished_at for earlier, later in zip(a_stages, a_stages[1:]))
        assert seen_a_running == 1
        # ...while B's stages ran beside A's on the other worker.
        overlaps = [
            (x, y) for x in a_stages for y in b_stages if y.started_at < x.finished_at and x.started_at < y.finished_at
        ]
        assert overlaps
        assert len({s.worker for s in a_stages + b_stages}) == 2
        assert "waiting: team at its limit of 1 running stage" in waiting_messages
        every = a_stages + b_stages
        wall = (max(s.finished_at for s in every) - min(s.started_at for s in every)).total_seconds()
        print(
            f"\n[measure] limit 1: A ran {len(a_stages)} stages one at a time; {len(overlaps)} A/B overlaps; "
            f"wall {wall:.1f}s"
        )
    finally:
        try:
            _wind_down([a.team, b.team], _isolated_broker)
        finally:
            second.stop(grace=15)

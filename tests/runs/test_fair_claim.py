"""Fair share: a wake-up claims the fairest queued stage across teams, never one stage twice, and no queued
stage is left without a wake-up (refinery.runs.services.stage_claim's docstring has the argument)."""

from __future__ import annotations

import threading
from collections import deque
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection

from refinery.runs.models import StageRun, Status
from refinery.runs.services import run_create, stage_claim, stage_finish, stage_requeue
from refinery.teams.models import TeamQuota
from refinery.teams.quotas import QueuedStage, TeamLoad, fair_pick, team_quota_set

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


# --- the pure picking function: a table ---------------------------------------------------------------

# Each case: queued stages (pk, team, queued minute), team loads (running, limit, last served minute or None),
# the named stage, then the expected order and blocked teams.
CASES = [
    pytest.param(
        [(1, "A", 0), (2, "A", 1), (3, "B", 5)],
        {"A": (1, None, 0), "B": (0, None, None)},
        1,
        [3, 1, 2],
        {},
        id="fewest-running-team-first-even-if-its-stage-is-newer",
    ),
    pytest.param(
        [(1, "A", 0), (2, "A", 1), (3, "B", 5)],
        {"A": (0, None, 10), "B": (0, None, None)},
        1,
        [3, 1, 2],
        {},
        id="tie-on-running-goes-to-the-never-served-team",
    ),
    pytest.param(
        [(1, "A", 0), (3, "B", 5)],
        {"A": (0, None, 10), "B": (0, None, 4)},
        1,
        [3, 1],
        {},
        id="tie-goes-to-the-least-recently-served-team",
    ),
    pytest.param(
        [(1, "A", 0), (3, "B", 5)],
        {"A": (0, None, None), "B": (0, None, None)},
        3,
        [1, 3],
        {},
        id="both-never-served-the-oldest-queued-stage-wins",
    ),
    pytest.param(
        [(1, "A", 0), (2, "A", 1), (3, "A", 2)],
        {"A": (0, None, None)},
        3,
        [3, 1, 2],
        {},
        id="within-a-team-the-named-stage-first-then-oldest",
    ),
    pytest.param(
        [(1, "A", 0), (2, "A", 1), (3, "B", 5)],
        {"A": (2, 2, 0), "B": (3, None, 1)},
        1,
        [3],
        {"A": 2},
        id="a-team-at-its-limit-is-blocked-even-with-fewer-running",
    ),
    pytest.param(
        [(1, "A", 0), (3, "B", 5)],
        {"A": (1, 2, 0), "B": (1, 1, 1)},
        3,
        [1],
        {"B": 1},
        id="limit-of-one-with-one-running",
    ),
    pytest.param([(1, "A", 0)], {"A": (0, 0, None)}, 1, [], {"A": 0}, id="a-limit-of-zero-pauses-the-team"),
    pytest.param(
        [(1, "A", 0), (2, "B", 0), (3, "C", 0)],
        {"A": (2, None, 3), "B": (1, 5, 2), "C": (1, None, 1)},
        1,
        [3, 2, 1],
        {},
        id="three-teams-by-running-then-last-served",
    ),
    pytest.param([], {}, 1, [], {}, id="nothing-queued"),
]


@pytest.mark.parametrize(("queued", "loads", "named", "order", "blocked"), CASES)
def test_fair_pick_table(queued, loads, named, order, blocked):
    ids = {"A": 1, "B": 2, "C": 3}
    pick = fair_pick(
        queued=[QueuedStage(pk=pk, team_id=ids[team], queued_at=at(minute)) for pk, team, minute in queued],
        teams={
            ids[t]: TeamLoad(running=r, limit=limit, last_served=None if served is None else at(served))
            for t, (r, limit, served) in loads.items()
        },
        named=named,
    )
    assert pick.order == order
    assert pick.blocked == {ids[t]: limit for t, limit in blocked.items()}


# --- the claim against the database ----------------------------------------------------------------------


@pytest.fixture
def queue(make_pipeline, django_capture_on_commit_callbacks, sent_stages):
    """queue(pipeline, n) -> the n one-stage runs' stages, queued in that order (wake-ups in sent_stages)."""

    def make(pipeline, n: int = 1) -> list[StageRun]:
        stages = []
        for _ in range(n):
            with django_capture_on_commit_callbacks(execute=True):
                run = run_create(pipeline=pipeline, user=pipeline.created_by)
            stages.append(run.stages.get())
        return stages

    return make


@pytest.mark.django_db
def test_a_wake_up_for_a_busy_teams_stage_claims_the_other_teams_stage(make_pipeline, queue):
    a_stages = queue(make_pipeline(("a", "base")), 4)
    first = stage_claim(stage_run_id=a_stages[0].pk, worker="w1")
    assert first.pk == a_stages[0].pk  # one team: the named stage
    (b,) = queue(make_pipeline(("b", "base")))

    claimed = stage_claim(stage_run_id=a_stages[1].pk, worker="w2")  # A has 1 running, B none
    assert claimed.pk == b.pk
    assert StageRun.objects.get(pk=a_stages[1].pk).status == Status.QUEUED
    # B's own wake-up, when it comes, claims the next fair stage: A's oldest queued one.
    assert stage_claim(stage_run_id=b.pk, worker="w3").pk == a_stages[1].pk


@pytest.mark.django_db
def test_a_team_at_its_running_stage_limit_waits_and_a_freed_slot_wakes_it(
    make_pipeline, queue, sent_stages, django_capture_on_commit_callbacks
):
    pipeline = make_pipeline(("a", "base"))
    TeamQuota.objects.create(team=pipeline.team, running_stages=1)
    one, two, three = queue(pipeline, 3)
    assert stage_claim(stage_run_id=one.pk, worker="w1").pk == one.pk

    assert stage_claim(stage_run_id=two.pk, worker="w2") is None  # the limit, not a refusal
    for stage in (two, three):
        stage.refresh_from_db()
        assert stage.status == Status.QUEUED
        assert stage.error == "waiting: team at its limit of 1 running stage"
    assert StageRun.objects.filter(run__team=pipeline.team, status=Status.RUNNING).count() == 1

    sent_stages.clear()
    with django_capture_on_commit_callbacks(execute=True):
        stage_finish(stage_run_id=one.pk, status=Status.SUCCEEDED)
    assert sent_stages == [two.pk]  # the freed slot's wake-up, for the team's oldest queued stage
    claimed = stage_claim(stage_run_id=two.pk, worker="w2")
    assert claimed.pk == two.pk and claimed.error == ""


@pytest.mark.django_db
def test_a_requeued_stage_frees_its_slot_and_raising_the_limit_wakes_the_queue(
    make_pipeline, queue, sent_stages, django_capture_on_commit_callbacks
):
    pipeline = make_pipeline(("a", "base"))
    team_quota_set(team=pipeline.team, running_stages=1)
    one, two = queue(pipeline, 2)
    stage_claim(stage_run_id=one.pk, worker="w1")
    sent_stages.clear()
    with django_capture_on_commit_callbacks(execute=True):
        stage_requeue(stage_run_id=one.pk, reason="worker lost")
    assert sorted(sent_stages) == sorted([one.pk, two.pk])  # its own wake-up, and the freed slot's

    stage_claim(stage_run_id=one.pk, worker="w1")
    assert stage_claim(stage_run_id=two.pk, worker="w2") is None
    sent_stages.clear()
    with django_capture_on_commit_callbacks(execute=True):
        team_quota_set(team=pipeline.team, running_stages=2)
    assert sent_stages == [two.pk]
    assert stage_claim(stage_run_id=two.pk, worker="w2").pk == two.pk


@pytest.mark.django_db
def test_one_message_per_queued_stage_is_enough_for_every_stage_to_run(
    make_pipeline, queue, sent_stages, django_capture_on_commit_callbacks
):
    """Simulate the broker: the wake-ups sent are the only messages, delivered in order to 3 workers; each
    claimed stage finishes at the next delivery. With limits and two teams, every stage still runs, and no
    reaper re-send is needed."""
    a = make_pipeline(("a", "base"))
    b = make_pipeline(("b", "base"))
    c = make_pipeline(("c", "base"))
    TeamQuota.objects.create(team=a.team, running_stages=1)
    TeamQuota.objects.create(team=b.team, running_stages=2)
    stages = queue(a, 6) + queue(b, 5) + queue(c, 3)
    messages = deque(sent_stages)
    sent_stages.clear()
    running: list[int] = []
    claims: list[int] = []
    while messages:
        if len(running) == 3:  # every worker busy: the oldest stage ends, which may send wake-ups
            with django_capture_on_commit_callbacks(execute=True):
                stage_finish(stage_run_id=running.pop(0), status=Status.SUCCEEDED)
            messages.extend(sent_stages)
            sent_stages.clear()
        claimed = stage_claim(stage_run_id=messages.popleft(), worker="w")
        if claimed is not None:
            claims.append(claimed.pk)
            running.append(claimed.pk)
            team_running = StageRun.objects.filter(run__team=claimed.run.team, status=Status.RUNNING).count()
            assert team_running <= {a.team_id: 1, b.team_id: 2}.get(claimed.run.team_id, 99)
        if not messages:  # the workers drain: what they finish may wake more
            while running and not messages:
                with django_capture_on_commit_callbacks(execute=True):
                    stage_finish(stage_run_id=running.pop(0), status=Status.SUCCEEDED)
                messages.extend(sent_stages)
                sent_stages.clear()
    assert sorted(claims) == sorted(s.pk for s in stages)  # each exactly once
    assert not StageRun.objects.filter(status=Status.QUEUED).exists()


@pytest.mark.django_db
def test_a_late_wake_up_for_a_canceled_run_claims_nothing_when_nothing_is_queued(make_pipeline, queue):
    from refinery.runs.services import run_cancel

    (stage,) = queue(make_pipeline(("a", "base")))
    run_cancel(run=stage.run)
    assert stage_claim(stage_run_id=stage.pk, worker="w") is None


# --- two workers racing (threads, each with its own connection) --------------------------------------


def _in_threads(count: int, target) -> list:
    results: list = [None] * count
    errors: list[BaseException] = []
    barrier = threading.Barrier(count)

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
        t.join(timeout=120)
    if errors:
        raise errors[0]
    return results


@pytest.mark.django_db(transaction=True)
def test_racing_workers_never_claim_one_stage_twice(make_pipeline, queue):
    stages = queue(make_pipeline(("a", "base")), 3) + queue(make_pipeline(("b", "base")), 2)
    for _ in range(3):  # rounds: 6 workers race for 5 stages, all naming the same stage
        StageRun.objects.filter(pk__in=[s.pk for s in stages]).update(
            status=Status.QUEUED, worker="", attempt=0, started_at=None, lease_expires_at=None
        )
        claims = _in_threads(6, lambda i: stage_claim(stage_run_id=stages[0].pk, worker=f"w{i}"))
        won = [c.pk for c in claims if c is not None]
        assert sorted(won) == sorted(s.pk for s in stages)  # every stage once, one worker left empty-handed
        assert claims.count(None) == 1
        rows = StageRun.objects.filter(pk__in=won)
        assert all(r.status == Status.RUNNING and r.attempt == 1 for r in rows)
        assert sorted(r.worker for r in rows) == sorted(c.worker for c in claims if c is not None)


@pytest.mark.django_db(transaction=True)
def test_racing_workers_respect_the_running_stage_limit(make_pipeline, queue):
    pipeline = make_pipeline(("a", "base"))
    TeamQuota.objects.create(team=pipeline.team, running_stages=2)
    stages = queue(pipeline, 6)
    claims = _in_threads(6, lambda i: stage_claim(stage_run_id=stages[i].pk, worker=f"w{i}"))
    assert len([c for c in claims if c is not None]) == 2
    assert StageRun.objects.filter(status=Status.RUNNING).count() == 2
    waiting = StageRun.objects.filter(status=Status.QUEUED)
    assert waiting.count() == 4
    assert set(waiting.values_list("error", flat=True)) == {"waiting: team at its limit of 2 running stages"}

"""The execution side of runs, called by the supervisor in jobs/ (by id: a worker acts for no team): claim a
queued stage fairly, renew its lease, record its metrics, finish or requeue it, reap stages whose worker was lost,
re-send lost wake-ups. Every transition locks the run, then the stage, and re-derives the run's status."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from django.conf import settings
from django.db import DatabaseError, transaction
from django.db.models import Count, Max
from django.utils import timezone

from refinery.pipelines.specs import stage_dependencies
from refinery.runs.models import (
    TERMINAL_STATES,
    IllegalTransition,
    Run,
    StageMetric,
    StageRun,
    Status,
)
from refinery.runs.services import dispatch
from refinery.runs.services.dispatch import enqueue_stage_on_commit
from refinery.runs.services.lifecycle import run_status_refresh, stages_queue_ready
from refinery.runs.services.listing import run_summary_refresh
from refinery.teams.models import Team
from refinery.teams.quotas import (
    RUNNING_STATES,
    QueuedStage,
    TeamLoad,
    fair_pick,
    team_limits,
    team_limits_many,
    waiting_message,
)

log = logging.getLogger(__name__)


def _locked_stage(stage_run_id: int, *, skip_locked: bool = False) -> StageRun | None:
    """Lock a stage *and its run* (in that order: run, then stage, everywhere).

    Every transition of a stage also re-derives its run's status from all of its stages;
    locking the run serialises those per run, so two stages of one run finishing at once
    cannot both read the other as still running and leave the run running forever.
    `of=("self",)` keeps the lock off the joined rows (PostgreSQL refuses FOR UPDATE on
    the nullable side of the outer join to created_by). With `skip_locked`, None means
    "busy, try later".
    """
    run_id = StageRun.objects.filter(pk=stage_run_id).values_list("run_id", flat=True).first()
    if run_id is None:
        return None
    run = (
        Run.objects.select_for_update(skip_locked=skip_locked, of=("self",))
        .select_related("team", "created_by")
        .filter(pk=run_id)
        .first()
    )
    if run is None:
        return None
    stage = StageRun.objects.select_for_update(skip_locked=skip_locked).filter(pk=stage_run_id).first()
    if stage is None:
        return None
    stage.run = run
    return stage


MAX_CLAIM_PASSES = 10


def stage_claim(*, stage_run_id: int, worker: str) -> StageRun | None:
    """Claim the fairest queued stage for this worker (fair share across teams), exactly once, or None.

    A wake-up names a stage, but the message is only a wake-up call: the claim takes the stage that
    refinery.teams.quotas.fair_pick puts first (teams under their running-stage limit, fewest running
    stages first; the named stage first within its team), which may be another one.

    Why no queued stage is left without a wake-up (one message per queued stage, counted):
    - every stage is queued with a wake-up sent after commit (and the reaper re-sends one for a stage
      queued over REFINERY_REDISPATCH_SECONDS, the backstop for a lost message);
    - a wake-up consumes one message and claims at most one stage. When it claims Y instead of the
      named X, X is still queued and Y's message is still in flight: when it arrives it claims the next
      fair stage (possibly X). So messages in flight >= queued stages anyone may claim;
    - a wake-up that claims nothing while stages are queued can only be one that found every queued
      stage's team at its running-stage limit (locks do not count: see below). Those stages become
      claimable only when a stage of their team stops holding a slot, and each time one does
      (stage_finish, stage_requeue, the reaper) one wake-up is sent for the team after commit
      (_team_slot_freed); an operator who raises or drops a limit wakes all the team's queued stages
      (quotas.team_quota_set). A duplicate delivery just claims the next fair stage, or nothing.
    Two workers never claim one stage: the claim locks the stage's run and row and takes it only if it
    is still queued. The first pass skips rows another transaction holds (a claim under way, a sibling
    stage finishing, a run being queued), taking the next fair stage instead; if every candidate was
    held, it waits for the fairest one (a new transaction per pass, locks taken team -> run -> stage
    as everywhere else) rather than dropping the wake-up. A team with a running-stage limit is
    counted under a lock on its row, so two workers cannot both take its last slot.
    """
    blocked: dict[int, int] = {}
    try:
        for attempt in range(MAX_CLAIM_PASSES):
            wait = attempt > 0
            with transaction.atomic():
                stage, contended, candidates = _claim_fairest(
                    named=stage_run_id, worker=worker, wait=wait, blocked=blocked
                )
            if stage is not None or not candidates or (not wait and not contended):
                return stage
        log.warning(
            "wake-up for stage %s: every claimable stage stayed busy for %d passes", stage_run_id, MAX_CLAIM_PASSES
        )
        return None
    finally:
        _stages_mark_waiting(blocked)


def _claim_fairest(
    *, named: int, worker: str, wait: bool, blocked: dict[int, int]
) -> tuple[StageRun | None, bool, bool]:
    """One pass of stage_claim. Returns (claimed stage, some candidate was locked, there were candidates).
    Without `wait`, locked rows are skipped; with it, only the fairest candidate is tried, waiting."""
    epoch = timezone.now() - timezone.timedelta(days=36500)
    queued = [
        QueuedStage(pk=pk, team_id=team_id, queued_at=queued_at or epoch)
        for pk, team_id, queued_at in StageRun.objects.filter(status=Status.QUEUED).values_list(
            "pk", "run__team_id", "queued_at"
        )
    ]
    if not queued:
        return None, False, False
    team_ids = {s.team_id for s in queued}
    by_team = StageRun.objects.filter(run__team_id__in=team_ids).order_by().values("run__team_id")
    running = dict(by_team.filter(status__in=RUNNING_STATES).annotate(n=Count("pk")).values_list("run__team_id", "n"))
    served = dict(
        by_team.filter(started_at__isnull=False).annotate(last=Max("started_at")).values_list("run__team_id", "last")
    )
    limits = team_limits_many(team_ids=team_ids)
    loads = {
        t: TeamLoad(running=running.get(t, 0), limit=limits[t].running_stages, last_served=served.get(t))
        for t in team_ids
    }
    pick = fair_pick(queued=queued, teams=loads, named=named)
    blocked.clear()
    blocked.update(pick.blocked)
    team_of = {s.pk: s.team_id for s in queued}
    contended = False
    counted: dict[int, bool] = {}  # team id -> under its limit (counted under its row lock)
    for pk in pick.order[:1] if wait else pick.order:
        team_id = team_of[pk]
        limit = limits[team_id].running_stages
        if limit is not None:
            if team_id not in counted:
                if Team.objects.select_for_update(skip_locked=not wait).filter(pk=team_id).first() is None:
                    contended = True
                    continue
                now_running = StageRun.objects.filter(run__team_id=team_id, status__in=RUNNING_STATES).count()
                counted[team_id] = now_running < limit
                if not counted[team_id]:
                    blocked[team_id] = limit
            if not counted[team_id]:
                continue
        stage = _locked_stage(pk, skip_locked=not wait)
        if stage is None:
            contended = True
            continue
        if stage.status != Status.QUEUED:
            continue
        if stage.run.status in TERMINAL_STATES:
            stage.mark_finished(Status.CANCELED, error=f"not run: the run is already {stage.run.status}")
            stage.save()
            continue
        stage.mark_running(worker=worker, lease_seconds=settings.REFINERY_LEASE_SECONDS)
        stage.error = ""
        stage.save()
        run_status_refresh(stage.run)
        if stage.pk != named:
            log.info("wake-up for stage %s claimed stage %s (fair share)", named, stage.pk)
        return stage, contended, True
    return None, contended, True


def _stages_mark_waiting(blocked: dict[int, int]) -> None:
    """Say on the queued stages of teams at their running-stage limit why they wait (best effort, after
    the claim: a failure here must not cost the claim)."""
    for team_id, limit in blocked.items():
        message = waiting_message(limit)
        try:
            with transaction.atomic():  # a savepoint when called inside a transaction
                StageRun.objects.filter(run__team_id=team_id, status=Status.QUEUED).exclude(error=message).update(
                    error=message
                )
        except DatabaseError as exc:
            log.warning("could not mark team %s's queued stages as waiting: %s", team_id, exc)


def _team_slot_freed(team_id: int) -> None:
    """A stage of the team stopped holding a worker. Its queued stages may have had their wake-ups consumed
    while the team was at its running-stage limit: send one wake-up (after commit) for the slot now free."""
    if team_limits(team=team_id).running_stages is None:
        return
    pk = (
        StageRun.objects.filter(run__team_id=team_id, status=Status.QUEUED)
        .order_by("queued_at", "pk")
        .values_list("pk", flat=True)
        .first()
    )
    if pk is not None:
        enqueue_stage_on_commit(pk)


def stage_heartbeat(
    *,
    stage_run_id: int,
    worker: str,
    attempt: int,
    step: int | None = None,
    total_steps: int | None = None,
    epoch: float | None = None,
) -> tuple[bool, bool]:
    """Renew the lease and record progress. Returns (still_ours, cancel_requested)."""
    now = timezone.now()
    fields: dict = {
        "heartbeat_at": now,
        "lease_expires_at": now + timezone.timedelta(seconds=settings.REFINERY_LEASE_SECONDS),
    }
    if step is not None:
        fields["step"] = step
    if total_steps is not None:
        fields["total_steps"] = total_steps
    if epoch is not None:
        fields["epoch"] = epoch
    updated = StageRun.objects.filter(
        pk=stage_run_id, worker=worker, attempt=attempt, status__in=[Status.RUNNING, Status.CANCELING]
    ).update(**fields)
    cancel = StageRun.objects.filter(pk=stage_run_id, cancel_requested_at__isnull=False).exists()
    return bool(updated), cancel


def stage_update(*, stage_run_id: int, **fields) -> None:
    allowed = {"trainable_params", "total_params", "mlflow_run_id", "log_tail", "total_steps"}
    unknown = set(fields) - allowed
    if unknown:
        raise ValueError(f"cannot update {sorted(unknown)}")
    StageRun.objects.filter(pk=stage_run_id).update(**fields)


def run_mlflow_ids_set(*, run_id: int, experiment_id: str, mlflow_run_id: str) -> bool:
    """Store a run's MLflow parent run unless another process stored one first. True if this one won."""
    return bool(
        Run.objects.filter(pk=run_id, mlflow_run_id="").update(
            mlflow_run_id=mlflow_run_id, mlflow_experiment_id=experiment_id
        )
    )


def stage_metrics_record(*, stage_run_id: int, points: Iterable[tuple[str, int, float, float]]) -> int:
    """Store (key, step, value, timestamp) points; a point already stored for that step is kept."""
    rows = [StageMetric(stage_run_id=stage_run_id, key=k, step=s, value=v, timestamp=t) for k, s, v, t in points]
    StageMetric.objects.bulk_create(rows, ignore_conflicts=True)
    return len(rows)


@transaction.atomic
def stage_finish(
    *,
    stage_run_id: int,
    status: str,
    error: str = "",
    outputs: dict | None = None,
    summary: dict | None = None,
    log_tail: str | None = None,
    attempt: int | None = None,
) -> StageRun:
    """Mark a stage finished and advance its run (queue the next stages, or end the run).

    A supervisor passes its `attempt`: if the stage was meanwhile reaped and handed to
    another attempt (or already ended), IllegalTransition is raised and nothing changes.
    """
    stage = _locked_stage(stage_run_id)
    if stage is None:
        raise StageRun.DoesNotExist(stage_run_id)
    if attempt is not None and (stage.attempt != attempt or stage.status not in (Status.RUNNING, Status.CANCELING)):
        raise IllegalTransition(
            f"stage {stage.name!r}: attempt {attempt} no longer owns it (attempt {stage.attempt}, {stage.status})"
        )
    stage.mark_finished(status, error=error)
    if outputs is not None:
        stage.outputs = outputs
    if summary is not None:
        stage.summary = summary
    if log_tail is not None:
        stage.log_tail = log_tail
    if status == Status.SUCCEEDED and stage.total_steps:
        stage.step = max(stage.step, stage.total_steps)  # the last progress tick may not have landed
    stage.save()
    run_summary_refresh(run_id=stage.run_id)  # RunMetric rows: the runs list sorts by stage summaries
    run = stage.run
    if status == Status.SUCCEEDED:
        stages_queue_ready(run)
    else:
        # Stages that depend on this one can never run.
        _cancel_dependents(run, reason=f"stage {stage.name!r} {status}")
    run_status_refresh(run)
    _team_slot_freed(run.team_id)
    return stage


def _cancel_dependents(run: Run, *, reason: str) -> None:
    stages = list(run.stages.select_for_update().order_by("index"))
    by_name = {s.name: s for s in stages}
    changed = True
    while changed:
        changed = False
        for stage in stages:
            needs = stage_dependencies(stage.spec)
            if stage.status == Status.PENDING and any(
                by_name[name].status in TERMINAL_STATES - {Status.SUCCEEDED} for name in needs
            ):
                stage.mark_finished(Status.CANCELED, error=f"not run: {reason}")
                stage.save()
                changed = True


@transaction.atomic
def stage_requeue(*, stage_run_id: int, reason: str, attempt: int | None = None) -> StageRun:
    """Put a running stage whose worker or trainer was lost back in the queue (attempt + 1 on claim),
    or fail it when it has had all its attempts. A supervisor passes its `attempt` (see stage_finish)."""
    stage = _locked_stage(stage_run_id)
    if attempt is not None and (stage.attempt != attempt or stage.status != Status.RUNNING):
        raise IllegalTransition(
            f"stage {stage.name!r}: attempt {attempt} no longer owns it (attempt {stage.attempt}, {stage.status})"
        )
    if stage.attempt >= stage.max_attempts:
        stage.mark_finished(Status.FAILED, error=f"{reason}; gave up after {stage.attempt} attempts")
        stage.save()
        _cancel_dependents(stage.run, reason=f"stage {stage.name!r} failed")
        run_status_refresh(stage.run)
        _team_slot_freed(stage.run.team_id)
        return stage
    stage.mark_queued()
    stage.worker = ""
    stage.lease_expires_at = None
    stage.error = reason
    stage.save()
    enqueue_stage_on_commit(stage.pk)
    _team_slot_freed(stage.run.team_id)
    return stage


def stage_redispatch_stale() -> list[int]:
    """Send the wake-up again for stages queued longer than REFINERY_REDISPATCH_SECONDS without being claimed.

    Covers a message lost between broker and worker (a broker restarted without persistence, a
    worker killed after taking the message and before claiming). A duplicate costs one no-op
    claim; the interval keeps a long but healthy queue from filling with them.
    """
    cutoff = timezone.now() - timezone.timedelta(seconds=float(settings.REFINERY_REDISPATCH_SECONDS))
    stale = list(StageRun.objects.filter(status=Status.QUEUED, dispatched_at__lt=cutoff).values_list("pk", flat=True))
    sent = []
    for pk in stale:
        # Claim the re-send first, so that two reapers (or beat catching up) send it once.
        if StageRun.objects.filter(pk=pk, status=Status.QUEUED, dispatched_at__lt=cutoff).update(
            dispatched_at=timezone.now()
        ):
            dispatch.send_run_stage(pk)  # through the module: tests record the wake-ups
            sent.append(pk)
    if sent:
        log.info(
            "re-sent the wake-up of %d stage(s) queued for over %.0fs: %s",
            len(sent),
            settings.REFINERY_REDISPATCH_SECONDS,
            sent,
        )
    return sent


def stage_reap_expired() -> list[int]:
    """Find running stages whose lease expired (their worker died) and requeue or fail them."""
    now = timezone.now()
    expired = list(
        StageRun.objects.filter(status__in=[Status.RUNNING, Status.CANCELING], lease_expires_at__lt=now).values_list(
            "pk", "status", "cancel_requested_at"
        )
    )
    handled = []
    for pk, _status, cancel_requested in expired:
        with transaction.atomic():
            stage = _locked_stage(pk, skip_locked=True)
            if stage is None or stage.lease_expires_at is None or stage.lease_expires_at >= now:
                continue
            if stage.status == Status.CANCELING or cancel_requested:
                stage.mark_finished(Status.CANCELED, error="canceled (worker lost)")
                stage.save()
                _cancel_dependents(stage.run, reason="canceled")
                run_status_refresh(stage.run)
                _team_slot_freed(stage.run.team_id)
            else:
                stage_requeue(stage_run_id=pk, reason=f"worker {stage.worker or '?'} lost (lease expired)")
            handled.append(pk)
    return handled

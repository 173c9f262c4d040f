"""Per-team quotas (set by an operator) and the fair-share order in which workers take queued stages.

| limit | where it is enforced | what happens |
| --- | --- | --- |
| queued_runs | run_create / run_rerun / sweep_create (refinery.runs, refinery.sweeps) | refused, nothing queued |
| running_stages | stage_claim (refinery.runs.services) | the stage waits queued; others' stages go first |
| stage_seconds | the supervisor's react loop (jobs.supervisor) | the trainer is stopped like a cancel, and fails |
| storage_bytes | dataset_version_create (refinery.data.services) | the upload is refused while it streams |

A team's TeamQuota row decides its limits (a blank field: no limit); a team without a row gets the
REFINERY_QUOTA_* settings (unset: no limit).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields
from datetime import datetime

from django.conf import settings
from django.db import transaction

from refinery.core.units import format_bytes, format_duration
from refinery.teams.models import Team, TeamQuota


class QuotaExceeded(Exception):
    """A team's limit refuses what was asked; the message names the limit."""


@dataclass(frozen=True)
class TeamLimits:
    running_stages: int | None = None
    queued_runs: int | None = None
    stage_seconds: int | None = None
    storage_bytes: int | None = None


@dataclass(frozen=True)
class TeamUsage:
    running_stages: int
    queued_runs: int
    storage_bytes: int


LIMIT_FIELDS = tuple(f.name for f in fields(TeamLimits))


def default_limits() -> TeamLimits:
    return TeamLimits(
        running_stages=settings.REFINERY_QUOTA_RUNNING_STAGES,
        queued_runs=settings.REFINERY_QUOTA_QUEUED_RUNS,
        stage_seconds=settings.REFINERY_QUOTA_STAGE_SECONDS,
        storage_bytes=settings.REFINERY_QUOTA_STORAGE_BYTES,
    )


def _limits_of(row: TeamQuota | None) -> TeamLimits:
    if row is None:
        return default_limits()
    return TeamLimits(**{name: getattr(row, name) for name in LIMIT_FIELDS})


def team_limits(*, team: Team | int) -> TeamLimits:
    """The team's limits: its TeamQuota row if it has one, else the settings' defaults."""
    team_id = team if isinstance(team, int) else team.pk
    return _limits_of(TeamQuota.objects.filter(team_id=team_id).first())


def team_limits_many(*, team_ids: Iterable[int]) -> dict[int, TeamLimits]:
    ids = set(team_ids)
    rows = {q.team_id: q for q in TeamQuota.objects.filter(team_id__in=ids)}
    return {team_id: _limits_of(rows.get(team_id)) for team_id in ids}


def team_usage(*, team: Team) -> TeamUsage:
    """What the team uses now, next to each limit."""
    from django.db.models import Sum

    from refinery.data.models import DatasetVersion
    from refinery.runs.models import Run, StageRun

    return TeamUsage(
        running_stages=StageRun.objects.filter(run__team=team, status__in=RUNNING_STATES).count(),
        queued_runs=Run.objects.filter(team=team, status__in=UNFINISHED_RUN_STATES).count(),
        storage_bytes=DatasetVersion.objects.filter(dataset__team=team).aggregate(n=Sum("size_bytes"))["n"] or 0,
    )


# States that hold a worker (a canceling stage's trainer is still stopping) and runs that count as queued.
RUNNING_STATES = ("running", "canceling")
UNFINISHED_RUN_STATES = ("queued", "running", "canceling")


# --- parsing (the command) ---------------------------------------------------------------------------


_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_size(text: str) -> int:
    """ "50GiB", "1.5 GB", "1024" -> bytes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text or "")
    if not match or match[2].lower() not in _SIZE_UNITS:
        raise ValueError(f"{text!r} is not a size: write bytes or a number with a unit, e.g. 50GiB or 500MB")
    return int(float(match[1]) * _SIZE_UNITS[match[2].lower()])


def parse_duration(text: str) -> int:
    """ "2h", "90m", "1h30m", "3600" -> seconds."""
    text = (text or "").strip().replace(" ", "")
    parts = re.findall(r"(\d+)([a-zA-Z]*)", text)
    if not parts or "".join(n + u for n, u in parts) != text or any(u.lower() not in _DURATION_UNITS for _, u in parts):
        raise ValueError(f"{text!r} is not a duration: write seconds or e.g. 2h, 90m, 1h30m")
    return sum(int(n) * _DURATION_UNITS[u.lower()] for n, u in parts)


# --- queued runs: checked when a run is queued -------------------------------------------------------


def team_runs_check(*, team: Team, adding: int = 1) -> None:
    """Refuse queuing `adding` more runs when the team's unfinished runs would pass its queued-runs limit.

    Call it inside the transaction that creates the runs: it locks the team's row, so two requests
    queuing at once are counted one after the other (and a sweep's runs are counted together)."""
    from refinery.runs.models import Run

    limit = team_limits(team=team).queued_runs
    if limit is None:
        return
    Team.objects.select_for_update().filter(pk=team.pk).first()
    current = Run.objects.filter(team=team, status__in=UNFINISHED_RUN_STATES).count()
    if current + adding <= limit:
        return
    if adding == 1:
        raise QuotaExceeded(
            f"team {team.name!r} already has {current} queued or running run{'s' * (current != 1)} "
            f"(its limit is {limit}): wait for one to finish or cancel one"
        )
    raise QuotaExceeded(
        f"these {adding} runs would give team {team.name!r} {current + adding} queued or running "
        f"runs ({current} already), over its limit of {limit}: nothing was queued; wait for runs "
        f"to finish, cancel some, or queue at most {max(0, limit - current)}"
    )


# --- storage: checked while an upload streams ----------------------------------------------------------


def team_storage_guard(
    *, team: Team, chunks: Iterable[bytes], refuse: type[Exception] = QuotaExceeded
) -> Iterator[bytes]:
    """Pass an upload's chunks through, refusing it (raising `refuse` with the message) as soon as the
    team's stored datasets plus this upload pass its storage limit. The rest of the upload is then read
    (not stored, at most REFINERY_MAX_UPLOAD_BYTES) only to name its size in the message."""
    from django.db.models import Sum

    from refinery.data.models import DatasetVersion

    limit = team_limits(team=team).storage_bytes
    if limit is None:
        yield from chunks
        return
    used = DatasetVersion.objects.filter(dataset__team=team).aggregate(n=Sum("size_bytes"))["n"] or 0
    seen = 0
    stream = iter(chunks)
    for chunk in stream:
        seen += len(chunk)
        if used + seen > limit:
            cap = settings.REFINERY_MAX_UPLOAD_BYTES
            for rest in stream:
                seen += len(rest)
                if seen > cap:
                    break
            size = format_bytes(seen) if seen <= cap else f"over {format_bytes(cap)}"
            raise refuse(
                f"this upload ({size}) would take team {team.name!r} to {format_bytes(used + seen)} of "
                f"datasets, over its limit of {format_bytes(limit)}: delete old dataset versions or ask "
                "an operator for more"
            )
        yield chunk


# --- wall-clock budget per stage: checked by the supervisor ---------------------------------------------


def stage_budget_exceeded(*, started_at: datetime | None, budget_seconds: int | None, now: datetime) -> str | None:
    """The stage's failure message once it has run past its team's budget, else None.

    The budget counts from the stage's first start (StageRun.started_at), across attempts: the duration
    the run page shows, and retries (a trainer killed and resumed) cannot stretch it."""
    if budget_seconds is None or started_at is None:
        return None
    ran = (now - started_at).total_seconds()
    if ran <= budget_seconds:
        return None
    return (
        f"stopped: over the team's wall-clock budget of {format_duration(budget_seconds)} per stage "
        f"(ran {format_duration(ran, full=True)})"
    )


# --- fair share: which queued stage a worker takes ------------------------------------------------------


@dataclass(frozen=True)
class QueuedStage:
    pk: int
    team_id: int
    queued_at: datetime


@dataclass(frozen=True)
class TeamLoad:
    running: int  # stages running (or canceling) now
    limit: int | None  # running-stage limit
    last_served: datetime | None  # when one of its stages last started (None: never)


@dataclass(frozen=True)
class FairPick:
    order: list[int]  # stage ids, the fairest first
    blocked: dict[int, int]  # team id -> its running-stage limit, for teams at it that have queued stages


def fair_pick(*, queued: Iterable[QueuedStage], teams: dict[int, TeamLoad], named: int | None = None) -> FairPick:
    """The order in which a wake-up tries to claim queued stages. Pure: a table test drives it.

    Teams at their running-stage limit are left out (blocked). The others go fewest running stages
    first; ties go to the team served least recently (never served first), then to the team whose
    oldest queued stage is oldest. (Breaking ties by age alone would starve a newcomer on a single
    worker: the team with a 20-run sweep always holds the oldest queued stage.) Within a team, the
    stage the wake-up names comes first when it is that team's, then the oldest queued."""
    by_team: dict[int, list[QueuedStage]] = {}
    for stage in queued:
        by_team.setdefault(stage.team_id, []).append(stage)
    blocked: dict[int, int] = {}
    keyed = []
    for team_id, stages in by_team.items():
        load = teams.get(team_id, TeamLoad(running=0, limit=None, last_served=None))
        if load.limit is not None and load.running >= load.limit:
            blocked[team_id] = load.limit
            continue
        stages.sort(key=lambda s: (s.pk != named, s.queued_at, s.pk))
        oldest = min(s.queued_at for s in stages)
        never = load.last_served is None
        keyed.append(((load.running, not never, load.last_served if not never else oldest, oldest, team_id), stages))
    keyed.sort(key=lambda item: item[0])
    return FairPick(order=[s.pk for _, stages in keyed for s in stages], blocked=blocked)


def waiting_message(limit: int) -> str:
    return f"waiting: team at its limit of {limit} running stage{'s' * (limit != 1)}"


# --- operator side --------------------------------------------------------------------------------------


@transaction.atomic
def team_quota_set(*, team: Team, **limits: int | None) -> TeamQuota:
    """Set some of a team's limits (None: no limit); the fields not given keep their value (a new row
    starts from the settings' defaults). Queued stages of the team get a wake-up after commit, since a
    raised running-stage limit lets them start now."""
    unknown = set(limits) - set(LIMIT_FIELDS)
    if unknown:
        raise ValueError(f"unknown limits: {sorted(unknown)}")
    for name, value in limits.items():
        if value is not None and (not isinstance(value, int) or value < (1 if name == "stage_seconds" else 0)):
            raise ValueError(
                f"{name}: must be a whole number of at least {1 if name == 'stage_seconds' else 0}, got {value!r}"
            )
    quota = TeamQuota.objects.select_for_update().filter(team=team).first()
    if quota is None:
        quota = TeamQuota(team=team, **{name: getattr(default_limits(), name) for name in LIMIT_FIELDS})
    for name, value in limits.items():
        setattr(quota, name, value)
    quota.save()
    team_wake_queued(team_id=team.pk)
    return quota


@transaction.atomic
def team_quota_reset(*, team: Team) -> None:
    """Drop the team's own limits: it gets the settings' defaults again."""
    TeamQuota.objects.filter(team=team).delete()
    team_wake_queued(team_id=team.pk)


def team_wake_queued(*, team_id: int) -> int:
    """Send (after commit) a wake-up per queued stage of the team: its limit changed, so stages that waited
    for a free slot may start now. Extra wake-ups cost a no-op claim each."""
    from refinery.runs.models import StageRun, Status
    from refinery.runs.services.dispatch import enqueue_stage_on_commit

    pks = list(StageRun.objects.filter(run__team_id=team_id, status=Status.QUEUED).values_list("pk", flat=True))
    for pk in pks:
        enqueue_stage_on_commit(pk)
    return len(pks)


def quota_rows(*, team: Team) -> list[dict]:
    """The quota page's rows: each limit, the team's usage, and what happens at the limit."""
    limits, usage = team_limits(team=team), team_usage(team=team)

    def shown(value, fmt=str):
        return None if value is None else fmt(value)

    return [
        {
            "key": "running_stages",
            "label": "Running stages",
            "used": str(usage.running_stages),
            "limit": shown(limits.running_stages),
            "effect": "more stages wait in the queue while other teams' stages run",
        },
        {
            "key": "queued_runs",
            "label": "Queued or running runs",
            "used": str(usage.queued_runs),
            "limit": shown(limits.queued_runs),
            "effect": "a new run, re-run or sweep over the limit is refused",
        },
        {
            "key": "stage_seconds",
            "label": "Wall-clock budget per stage",
            "used": None,
            "limit": shown(limits.stage_seconds, format_duration),
            "effect": "a stage running longer (from its first start) is stopped and fails",
        },
        {
            "key": "storage_bytes",
            "label": "Dataset storage",
            "used": format_bytes(usage.storage_bytes),
            "limit": shown(limits.storage_bytes, format_bytes),
            "effect": "an upload that would pass it is refused",
        },
    ]

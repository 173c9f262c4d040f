"""Pure functions: when a schedule fires, which windows are due, and what an overlapping window does.

No database here: a "schedule" is anything with the Schedule model's attributes, times are aware
datetimes, windows are UTC instants. docs/schedules.md explains the rules; tests/schedules/test_windows.py
holds their tables.

Cron expressions are read in the schedule's IANA time zone, on wall-clock time:
- a wall time that does not exist (the hour skipped when clocks go forward) fires once, at the end of
  the gap (02:30 on the spring-forward night in Europe/Paris fires at 03:00 CEST);
- a wall time that happens twice (clocks go back) fires once, at its first occurrence.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

# How far a backward walk over cron windows looks at most (a stopped beat older than this loses its
# windows: catch-up never reaches further back than the limit anyway).
_MAX_WALK = 10_000


class WindowError(ValueError):
    """A cron expression, a time zone or an interval that cannot be used; the message says why."""


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise WindowError(f"unknown time zone {name!r} (use an IANA name such as Europe/Paris)") from None


def cron_check(expr: str) -> str:
    expr = " ".join((expr or "").split())
    if len(expr.split(" ")) != 5 or not croniter.is_valid(expr):
        raise WindowError(f"{expr!r} is not a five-field cron expression (minute hour day month weekday)")
    return expr


def _to_utc(wall: datetime, tz: ZoneInfo) -> datetime:
    """A naive wall time in `tz` as a UTC instant; a wall time skipped by a DST change becomes the end
    of the gap (the first instant whose wall time is later)."""
    first = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
    if first.astimezone(tz).replace(tzinfo=None) == wall:
        return first
    # Inside a gap: the instant lies between the two readings; find the transition to the second.
    lo = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
    hi = first
    if lo > hi:
        lo, hi = hi, lo
    while hi - lo > timedelta(seconds=1):
        mid = lo + (hi - lo) / 2
        if mid.astimezone(tz).replace(tzinfo=None) > wall:
            hi = mid
        else:
            lo = mid
    return hi.replace(microsecond=0)


def _cron_walk(expr: str, tz_name: str, start: datetime, *, forward: bool) -> Iterator[datetime]:
    """UTC fire instants strictly after (forward) or at/before (backward) `start`, each once, in order."""
    tz = zone(tz_name)
    expr = cron_check(expr)
    local = start.astimezone(tz).replace(tzinfo=None)
    if not forward:
        local += timedelta(seconds=1)  # get_prev is strict: include a window exactly at `start`
    it = croniter(expr, local)
    previous: datetime | None = None
    for _ in range(_MAX_WALK):
        wall = it.get_next(datetime) if forward else it.get_prev(datetime)
        instant = _to_utc(wall, tz)
        if forward and instant <= start or not forward and instant > start:
            continue
        if previous is not None and (instant <= previous if forward else instant >= previous):
            continue  # several skipped wall times fold into the end of one gap
        previous = instant
        yield instant


def _anchor(schedule) -> datetime:
    return schedule.start_at or schedule.created_at


def _interval_after(schedule, after: datetime) -> datetime:
    """The first interval window strictly after `after`: anchor + k * interval."""
    anchor, step = _anchor(schedule), timedelta(seconds=schedule.interval_seconds)
    if after < anchor:
        return anchor
    return anchor + ((after - anchor) // step + 1) * step


def _interval_at_or_before(schedule, moment: datetime) -> datetime | None:
    anchor, step = _anchor(schedule), timedelta(seconds=schedule.interval_seconds)
    if moment < anchor:
        return None
    return anchor + ((moment - anchor) // step) * step


def next_fire_times(schedule, *, after: datetime, count: int = 3) -> list[datetime]:
    """The next `count` windows strictly after `after` (dataset-triggered schedules have none to show),
    within start/end. A paused schedule still has them: they are what resuming would bring."""
    if schedule.trigger == "dataset":
        return []
    floor = max(after, schedule.start_at - timedelta(microseconds=1)) if schedule.start_at else after
    times: list[datetime] = []
    if schedule.trigger == "interval":
        moment = floor
        while len(times) < count:
            moment = _interval_after(schedule, moment)
            times.append(moment)
    else:
        for moment in _cron_walk(schedule.cron, schedule.timezone, floor, forward=True):
            times.append(moment)
            if len(times) == count:
                break
    return [t for t in times if schedule.end_at is None or t <= schedule.end_at]


def _lower_bound(schedule, last_window: datetime | None) -> datetime:
    """Windows at or before this are never due: the last window handled, the schedule's creation, its
    start, and its resume time (switching a paused schedule back on never floods)."""
    bounds = [schedule.created_at - timedelta(microseconds=1)]
    if last_window is not None:
        bounds.append(last_window)
    if schedule.start_at is not None:
        bounds.append(schedule.start_at - timedelta(microseconds=1))
    if schedule.resumed_at is not None:
        bounds.append(schedule.resumed_at - timedelta(microseconds=1))
    return max(bounds)


def due_windows(
    schedule, now: datetime, last_window: datetime | None, *, fired: int = 0, newest_data_at: datetime | None = None
) -> list[datetime]:
    """The windows to handle now, oldest first.

    Every window lies after `last_window` (the newest window already handled), at or after the schedule's
    creation, start and resume time, at or before `now` and `end_at`. Catch-up "latest" keeps the latest
    missed window only; "all" keeps the latest `catch_up_limit` of them. `max_runs` counts `fired` windows
    already used. A dataset trigger's single window is `newest_data_at + debounce` (the newest version of a
    dataset bound to "latest"): two uploads inside the debounce give one window.
    """
    if schedule.paused:
        return []
    lower = _lower_bound(schedule, last_window)
    upper = min(now, schedule.end_at) if schedule.end_at is not None else now
    if upper <= lower:
        return []
    limit = 1 if schedule.catch_up == "latest" else max(1, schedule.catch_up_limit)
    if schedule.max_runs is not None:
        limit = min(limit, schedule.max_runs - fired)
    if limit <= 0:
        return []
    windows: list[datetime] = []
    if schedule.trigger == "dataset":
        if newest_data_at is not None and newest_data_at >= schedule.created_at:
            window = newest_data_at + timedelta(seconds=schedule.debounce_seconds)
            if lower < window <= upper:
                windows.append(window)
    elif schedule.trigger == "interval":
        moment = _interval_at_or_before(schedule, upper)
        step = timedelta(seconds=schedule.interval_seconds)
        while moment is not None and moment > lower and len(windows) < limit:
            windows.append(moment)
            moment -= step
    else:
        for moment in _cron_walk(schedule.cron, schedule.timezone, upper, forward=False):
            if moment <= lower or len(windows) >= limit:
                break
            windows.append(moment)
    return sorted(windows)[-limit:] if windows else []


@dataclass(frozen=True)
class Decision:
    action: str  # "fire" | "skip" | "queue" | "replace"
    reason: str = ""


def decide(policy: str, active_run, *, waiting: bool = False) -> Decision:
    """What a due window does while the schedule's previous run may still be going.

    skip: nothing (the default). queue: wait for the running one, at most one window waiting (a further
    window is skipped). replace: cancel the running one and start.
    """
    if active_run is None:
        return Decision("fire")
    running = f"run #{active_run.number} is still {active_run.status}"
    if policy == "queue":
        if waiting:
            return Decision("skip", f"{running} and a window is already waiting")
        return Decision("queue", f"waiting for run #{active_run.number} ({active_run.status}) to finish")
    if policy == "replace":
        return Decision("replace", f"canceled run #{active_run.number}")
    return Decision("skip", running)

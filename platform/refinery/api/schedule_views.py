"""/api/v1/schedules: a team's schedules, their pause/resume/run-now buttons, their tick history, deletion.

Every lookup is inside the token's team (another team's schedule answers 404); writes need a member
or owner with a read-write token (403 otherwise)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from ninja import Router, Schema

from refinery.api.schemas import ErrorOut, In
from refinery.schedules.models import Schedule
from refinery.schedules.selectors import schedule_get, schedule_list, schedule_next_fires, schedule_ticks
from refinery.schedules.services import (
    ScheduleError,
    schedule_create,
    schedule_delete,
    schedule_pause,
    schedule_resume,
    schedule_run_now,
    schedule_update,
)

router = Router(tags=["schedules"])


class GateIn(In):
    """A promotion gate added to every run of the schedule (docs/schedules.md, "Promotion gates")."""

    candidate: str  # the stage whose model may be promoted
    dataset_id: int  # the held-out dataset
    config: dict[str, Any] = {}  # gate config: registered_model, alias, metric, min_gain, gain_mode, ...


class ScheduleIn(In):
    name: str
    pipeline_id: int
    version: int | None = None  # pipeline version number (the current one by default); pinned
    trigger: Literal["cron", "interval", "dataset"] = "interval"
    cron: str = ""  # five fields, read in `timezone`
    timezone: str = "UTC"  # IANA name
    interval_seconds: int | None = None
    debounce_seconds: int = 60
    bindings: dict[str, int | Literal["latest"]] = {}  # {dataset id: "latest" | dataset version id}
    start_at: datetime | None = None
    end_at: datetime | None = None
    max_runs: int | None = None
    overlap: Literal["skip", "queue", "replace"] = "skip"
    catch_up: Literal["latest", "all"] = "latest"
    catch_up_limit: int = 10
    failure_limit: int = 3  # pause after this many failed runs in a row; 0: never
    gate: GateIn | None = None


class ScheduleCreateIn(ScheduleIn):
    paused: bool = False


class ScheduleOut(Schema):
    id: int
    name: str
    pipeline_id: int
    version: int
    trigger: str
    cron: str
    timezone: str
    interval_seconds: int | None
    debounce_seconds: int
    bindings: dict[str, int | str]
    start_at: datetime | None
    end_at: datetime | None
    max_runs: int | None
    overlap: str
    catch_up: str
    catch_up_limit: int
    failure_limit: int
    paused: bool
    paused_reason: str
    gate: dict[str, Any] | None
    next_fires: list[datetime]
    created_at: datetime


class TickOut(Schema):
    window: datetime
    window_local: str
    manual: bool
    outcome: Literal["fired", "skipped", "failed", "queued"]
    reason: str
    run: int | None  # the run's number
    run_status: str | None
    created_at: datetime


def _out(schedule: Schedule) -> dict:
    return {
        **{
            f: getattr(schedule, f)
            for f in (
                "id",
                "name",
                "pipeline_id",
                "trigger",
                "cron",
                "timezone",
                "interval_seconds",
                "debounce_seconds",
                "bindings",
                "start_at",
                "end_at",
                "max_runs",
                "overlap",
                "catch_up",
                "catch_up_limit",
                "failure_limit",
                "paused",
                "paused_reason",
                "created_at",
                "gate",
            )
        },
        "version": schedule.pipeline_version.number,
        "next_fires": schedule_next_fires(schedule=schedule),
    }


def _tick_out(tick) -> dict:
    return {
        "window": tick.window,
        "window_local": tick.window_label,
        "manual": tick.manual,
        "outcome": tick.outcome,
        "reason": tick.reason,
        "run": tick.run.number if tick.run else None,
        "run_status": tick.run.status if tick.run else None,
        "created_at": tick.created_at,
    }


def _get(request, schedule_id: int) -> Schedule | None:
    if not 0 < schedule_id < 2**63:
        return None
    try:
        return schedule_get(team=request.team, pk=schedule_id)
    except Schedule.DoesNotExist:
        return None


def _not_found(schedule_id: int):
    return 404, {"detail": f"schedule #{schedule_id} not found in this team"}


def _require_write(request) -> None:
    from refinery.api.views import _require_write as require

    require(request)


@router.get("", response=list[ScheduleOut])
def list_schedules(request):
    return [_out(s) for s in schedule_list(team=request.team)]


@router.post("", response={201: ScheduleOut, 400: ErrorOut})
def create_schedule(request, payload: ScheduleCreateIn):
    """A schedule of a pinned pipeline version: cron (with a time zone), interval, or new dataset version."""
    _require_write(request)
    fields = payload.dict()
    paused = fields.pop("paused")
    try:
        schedule = schedule_create(team=request.team, user=request.user, paused=paused, **fields)
    except ScheduleError as exc:
        return 400, {"detail": str(exc), "errors": exc.errors}
    return 201, _out(schedule)


@router.get("/{int:schedule_id}", response={200: ScheduleOut, 404: ErrorOut})
def get_schedule(request, schedule_id: int):
    schedule = _get(request, schedule_id)
    return (200, _out(schedule)) if schedule else _not_found(schedule_id)


@router.put("/{int:schedule_id}", response={200: ScheduleOut, 400: ErrorOut, 404: ErrorOut})
def update_schedule(request, schedule_id: int, payload: ScheduleIn):
    """Replace a schedule's settings (its pause state stays; use pause/resume)."""
    _require_write(request)
    schedule = _get(request, schedule_id)
    if schedule is None:
        return _not_found(schedule_id)
    try:
        schedule = schedule_update(schedule=schedule, user=request.user, **payload.dict())
    except ScheduleError as exc:
        return 400, {"detail": str(exc), "errors": exc.errors}
    return 200, _out(schedule_get(team=request.team, pk=schedule.pk))


@router.delete("/{int:schedule_id}", response={204: None, 404: ErrorOut})
def delete_schedule(request, schedule_id: int):
    """Delete a schedule and its tick history. The runs it started stay, and keep saying which schedule and
    window started them; a running one keeps running."""
    _require_write(request)
    schedule = _get(request, schedule_id)
    if schedule is None:
        return _not_found(schedule_id)
    schedule_delete(schedule=schedule, user=request.user)
    return 204, None


@router.post("/{int:schedule_id}/pause", response={200: ScheduleOut, 404: ErrorOut})
def pause_schedule(request, schedule_id: int):
    _require_write(request)
    schedule = _get(request, schedule_id)
    if schedule is None:
        return _not_found(schedule_id)
    schedule_pause(schedule=schedule, user=request.user)
    return 200, _out(schedule_get(team=request.team, pk=schedule_id))


@router.post("/{int:schedule_id}/resume", response={200: ScheduleOut, 404: ErrorOut})
def resume_schedule(request, schedule_id: int):
    """Switch back on; windows missed while paused are not caught up."""
    _require_write(request)
    schedule = _get(request, schedule_id)
    if schedule is None:
        return _not_found(schedule_id)
    schedule_resume(schedule=schedule, user=request.user)
    return 200, _out(schedule_get(team=request.team, pk=schedule_id))


@router.post("/{int:schedule_id}/run-now", response={201: TickOut, 404: ErrorOut})
def run_schedule_now(request, schedule_id: int):
    """Start a run now (a manual window), whatever the pause state and overlap policy. A run that cannot
    start gives a tick with outcome "failed" and the reason."""
    _require_write(request)
    schedule = _get(request, schedule_id)
    if schedule is None:
        return _not_found(schedule_id)
    return 201, _tick_out(schedule_run_now(schedule=schedule, user=request.user))


@router.get("/{int:schedule_id}/ticks", response={200: list[TickOut], 404: ErrorOut})
def list_schedule_ticks(request, schedule_id: int, limit: int = 50):
    """The tick history, newest window first: fired (with the run), queued, skipped and why, failed."""
    schedule = _get(request, schedule_id)
    if schedule is None:
        return _not_found(schedule_id)
    return 200, [_tick_out(t) for t in schedule_ticks(schedule=schedule, limit=max(1, min(limit, 500)))]

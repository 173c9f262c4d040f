"""Services that write schedules and fire their windows.

The only way a scheduled run starts is `_window_handle`: it inserts the (schedule, window) tick row first,
and an IntegrityError means another beat, a retried task or an earlier pass already handled that window,
so it does nothing. Decisions about one schedule are serialized by locking its row; the unique key is what
holds when that is not enough (a restart, a second database connection, a replayed task).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.db import IntegrityError, transaction
from django.db.models import Max, Q
from django.utils import timezone

from refinery.data.models import DatasetVersion
from refinery.notifications.kinds import EventKind
from refinery.notifications.services import notify
from refinery.pipelines.models import Pipeline, PipelineVersion
from refinery.runs.models import ACTIVE_STATES, Run, Status
from refinery.runs.services import RunError, run_cancel, run_create
from refinery.schedules.models import CatchUp, Overlap, Schedule, ScheduleTick, TickOutcome, Trigger
from refinery.schedules.windows import Decision, WindowError, cron_check, decide, due_windows, zone
from refinery.teams.services import audit

log = logging.getLogger(__name__)

LATEST = "latest"
MAX_INTERVAL_SECONDS = 366 * 24 * 3600
MAX_DEBOUNCE_SECONDS = 7 * 24 * 3600
MAX_LIMIT = 1000


class ScheduleError(Exception):
    """A schedule cannot be saved as asked: `errors` maps each field to what is wrong with it."""

    def __init__(self, errors: dict[str, str]):
        self.errors = errors
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))


def _db_id(value) -> int:
    """A primary key the database can hold, or ValueError."""
    number = int(value)
    if not 0 < number < 2**63:
        raise ValueError(value)
    return number


def version_dataset_ids(version: PipelineVersion, gate: dict | None = None) -> list[int]:
    """Every dataset a pipeline version reads (training, held-out and retention data), in order, plus the
    held-out set of a schedule's gate."""
    spec = version.spec or {}
    found: list[int] = []
    if gate and gate.get("dataset_id") not in (None, ""):
        spec = {**spec, "stages": [*spec.get("stages", []), {"dataset_id": gate["dataset_id"]}]}
    for stage in spec.get("stages", []):
        for key in ("dataset_id", "eval_dataset_id"):
            if stage.get(key) not in (None, ""):
                found.append(int(stage[key]))
    if spec.get("retention_dataset_id") not in (None, ""):
        found.append(int(spec["retention_dataset_id"]))
    return list(dict.fromkeys(found))


def _bindings_clean(
    *, team, version: PipelineVersion, bindings, errors: dict, gate: dict | None = None
) -> dict[str, object]:
    """{"<dataset id>": "latest" | <version id>} for exactly the datasets the version (and the schedule's
    gate) reads (missing ones default to "latest")."""
    read = version_dataset_ids(version, gate)
    given = bindings or {}
    if not isinstance(given, dict):
        errors["bindings"] = 'bindings must map dataset ids to "latest" or a version id'
        return {}
    clean: dict[str, object] = {}
    for key, value in given.items():
        try:
            dataset_id = _db_id(key)
        except (TypeError, ValueError):
            errors["bindings"] = f"{key!r} is not a dataset id"
            return {}
        if dataset_id not in read:
            errors["bindings"] = f"the pipeline version does not read dataset #{dataset_id}"
            return {}
        if value in (LATEST, "", None):
            clean[str(dataset_id)] = LATEST
            continue
        try:
            version_id = _db_id(value)
        except (TypeError, ValueError):
            errors["bindings"] = f'dataset #{dataset_id}: {value!r} is neither "latest" nor a version id'
            return {}
        if not DatasetVersion.objects.filter(pk=version_id, dataset_id=dataset_id, dataset__team=team).exists():
            errors["bindings"] = f"dataset #{dataset_id} has no version with id {version_id}"
            return {}
        clean[str(dataset_id)] = version_id
    for dataset_id in read:
        clean.setdefault(str(dataset_id), LATEST)
    return {k: clean[k] for k in sorted(clean, key=int)}


def _gate_clean(*, team, version: PipelineVersion | None, gate, errors: dict) -> dict | None:
    """A schedule's gate, validated as the stage it adds to each run: {"candidate", "dataset_id", "config"}
    with every config field filled in; None for no gate. Errors name `gate.<field>`."""
    from refinery.pipelines.specs import GATE_FIELDS, SpecError, pipeline_spec_normalize, spec_with_gate

    if gate in (None, {}, ""):
        return None
    if not isinstance(gate, dict) or set(gate) - GATE_FIELDS:
        errors["gate"] = 'a gate is {"candidate": <stage>, "dataset_id": <held-out dataset id>, "config": {...}}'
        return None
    if version is None:
        return None
    spec, name = spec_with_gate(version.spec or {}, gate)
    index = len(spec["stages"]) - 1
    try:
        normalized = pipeline_spec_normalize(team=team, spec=spec, base_model=version.base_model)
    except SpecError as exc:
        prefix = f"stages.{index}"
        for key, message in exc.errors.items():
            if key == prefix or key.startswith(prefix + "."):
                field = key[len(prefix) + 1 :] or "gate"
                field = {"input": "candidate"}.get(field, field)
                errors[f"gate.{field}" if field != "gate" else "gate"] = message.replace(
                    f"stage {index + 1} ({name}): ", ""
                )
            else:
                errors.setdefault("gate", f"the pipeline version with this gate is not valid: {message}")
        return None
    stage = normalized["stages"][index]
    return {"candidate": stage["input"], "dataset_id": stage["dataset_id"], "config": stage["config"]}


def _int_or_none(errors: dict, field: str, value, *, low: int, high: int, required: bool = False) -> int | None:
    if value in (None, ""):
        if required:
            errors[field] = "required"
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        errors[field] = f"{value!r} is not a whole number"
        return None
    if not low <= number <= high:
        errors[field] = f"must be between {low} and {high}"
        return None
    return number


def _validated(*, team, fields: dict, instance: Schedule | None = None) -> dict:
    errors: dict[str, str] = {}
    clean: dict = {}
    name = (fields.get("name") or "").strip()
    if not name:
        errors["name"] = "required"
    elif len(name) > 100:
        errors["name"] = "at most 100 characters"
    elif Schedule.objects.filter(team=team, name=name).exclude(pk=instance.pk if instance else None).exists():
        errors["name"] = f"a schedule named {name!r} already exists in this team"
    clean["name"] = name

    pipeline = version = None
    pipeline_id = fields.get("pipeline_id")
    try:
        pipeline = Pipeline.objects.get(team=team, pk=_db_id(pipeline_id))
    except (TypeError, ValueError, Pipeline.DoesNotExist):
        errors["pipeline_id"] = f"pipeline {pipeline_id!r} does not exist in this team"
    if pipeline is not None:
        from refinery.pipelines.services import pipeline_current_version

        number = fields.get("version")
        version = pipeline_current_version(pipeline)  # written now for a pipeline saved before versions existed
        if number not in (None, "") and str(number) != str(version.number):
            try:
                version = pipeline.versions.get(number=_db_id(number))
            except (TypeError, ValueError, PipelineVersion.DoesNotExist):
                errors["version"] = f"pipeline {pipeline.name!r} has no version {number!r}"
    clean["pipeline"], clean["pipeline_version"] = pipeline, version

    trigger = fields.get("trigger") or Trigger.INTERVAL
    if trigger not in Trigger.values:
        errors["trigger"] = f"must be one of {', '.join(Trigger.values)}"
    clean["trigger"] = trigger
    clean["cron"], clean["timezone"] = "", (fields.get("timezone") or "UTC").strip()
    try:
        zone(clean["timezone"])
    except WindowError as exc:
        errors["timezone"] = str(exc)
    if trigger == Trigger.CRON:
        try:
            clean["cron"] = cron_check(fields.get("cron") or "")
        except WindowError as exc:
            errors["cron"] = str(exc)
    clean["interval_seconds"] = _int_or_none(
        errors,
        "interval_seconds",
        fields.get("interval_seconds"),
        low=1,
        high=MAX_INTERVAL_SECONDS,
        required=trigger == Trigger.INTERVAL,
    )
    if trigger != Trigger.INTERVAL:
        clean["interval_seconds"] = None
    debounce = _int_or_none(
        errors, "debounce_seconds", fields.get("debounce_seconds"), low=0, high=MAX_DEBOUNCE_SECONDS
    )
    clean["debounce_seconds"] = 60 if debounce is None else debounce
    clean["max_runs"] = _int_or_none(errors, "max_runs", fields.get("max_runs"), low=1, high=10**9)
    limit = _int_or_none(errors, "catch_up_limit", fields.get("catch_up_limit"), low=1, high=MAX_LIMIT)
    clean["catch_up_limit"] = 10 if limit is None else limit
    failures = _int_or_none(errors, "failure_limit", fields.get("failure_limit"), low=0, high=MAX_LIMIT)
    clean["failure_limit"] = 3 if failures is None else failures
    for field, choices, default in (("overlap", Overlap, Overlap.SKIP), ("catch_up", CatchUp, CatchUp.LATEST)):
        value = fields.get(field) or default
        if value not in choices.values:
            errors[field] = f"must be one of {', '.join(choices.values)}"
        clean[field] = value
    for field in ("start_at", "end_at"):
        value = fields.get(field)
        if value is not None and not isinstance(value, datetime):
            errors[field] = "must be a date and time"
            value = None
        if value is not None and timezone.is_naive(value):
            value = value.replace(tzinfo=zone(clean["timezone"]) if "timezone" not in errors else None)
        clean[field] = value
    if clean["start_at"] and clean["end_at"] and clean["end_at"] <= clean["start_at"]:
        errors["end_at"] = "must be after the start"
    clean["gate"] = _gate_clean(team=team, version=version, gate=fields.get("gate"), errors=errors)
    if version is not None:
        clean["bindings"] = _bindings_clean(
            team=team, version=version, bindings=fields.get("bindings"), errors=errors, gate=clean["gate"]
        )
        if trigger == Trigger.DATASET and "bindings" not in errors and LATEST not in clean["bindings"].values():
            errors["bindings"] = 'a dataset trigger needs at least one dataset bound to "latest"'
    if errors:
        raise ScheduleError(errors)
    return clean


@transaction.atomic
def schedule_create(*, team, user, paused: bool = False, **fields) -> Schedule:
    """A new schedule. `fields`: name, pipeline_id, version (number; the current one by default), trigger,
    cron, timezone, interval_seconds, debounce_seconds, bindings, start_at, end_at, max_runs, overlap,
    catch_up, catch_up_limit, failure_limit."""
    clean = _validated(team=team, fields=fields)
    schedule = Schedule.objects.create(
        team=team, created_by=user, paused=paused, paused_reason="created paused" if paused else "", **clean
    )
    audit(
        team=team,
        user=user,
        action="schedule.created",
        target=f"schedule {schedule.name}",
        pipeline=schedule.pipeline.name,
        version=schedule.pipeline_version.number,
        trigger=schedule.trigger,
    )
    return schedule


@transaction.atomic
def schedule_update(*, schedule: Schedule, user, **fields) -> Schedule:
    schedule = Schedule.objects.select_for_update().get(pk=schedule.pk)
    clean = _validated(team=schedule.team, fields=fields, instance=schedule)
    changed = sorted(k for k, v in clean.items() if getattr(schedule, k) != v)
    for key, value in clean.items():
        setattr(schedule, key, value)
    schedule.save()
    audit(
        team=schedule.team,
        user=user,
        action="schedule.updated",
        target=f"schedule {schedule.name}",
        changed=", ".join(changed),
    )
    return schedule


@transaction.atomic
def schedule_pause(*, schedule: Schedule, user, reason: str = "") -> Schedule:
    schedule = Schedule.objects.select_for_update().get(pk=schedule.pk)
    schedule.paused = True
    schedule.paused_reason = reason or (f"paused by {user.get_username()}" if user else "paused")
    schedule.save(update_fields=["paused", "paused_reason", "updated_at"])
    audit(
        team=schedule.team,
        user=user,
        action="schedule.paused" if user else "schedule.auto_paused",
        target=f"schedule {schedule.name}",
        reason=schedule.paused_reason,
    )
    if user is None:  # paused itself (after failures): tell the team's webhooks and mail, in this transaction
        notify(
            team=schedule.team_id,
            kind=EventKind.SCHEDULE_PAUSED,
            payload={
                "schedule": {"id": schedule.pk, "name": schedule.name},
                "reason": schedule.paused_reason,
                "summary": f"schedule {schedule.name} paused itself: {schedule.paused_reason}",
            },
        )
    return schedule


@transaction.atomic
def schedule_resume(*, schedule: Schedule, user) -> Schedule:
    """Switch back on. Windows before now are never caught up (no flood); failures before now no longer
    count towards the auto-pause."""
    schedule = Schedule.objects.select_for_update().get(pk=schedule.pk)
    schedule.paused, schedule.paused_reason, schedule.resumed_at = False, "", timezone.now()
    schedule.save(update_fields=["paused", "paused_reason", "resumed_at", "updated_at"])
    audit(team=schedule.team, user=user, action="schedule.resumed", target=f"schedule {schedule.name}")
    return schedule


def scheduled_run_label(tick: ScheduleTick) -> str:
    """What a run started by `tick` says about it: "schedule nightly-sft, window 2026-12-05 02:00 Europe/Paris"
    (" (run now)" for a manual window)."""
    return (f"schedule {tick.schedule.name}, window {tick.window_label}" + (" (run now)" if tick.manual else ""))[:300]


@transaction.atomic
def schedule_delete(*, schedule: Schedule, user) -> int:
    """Delete a schedule and its tick history; returns how many runs it had started.

    Those runs stay (a running one keeps running) and keep saying which schedule and window started them:
    the pages read that from the run's tick, which goes with the schedule, so the label is written onto each
    run first (Run.schedule_label). A window waiting to start (queued) goes with the rest."""
    schedule = Schedule.objects.select_for_update().get(pk=schedule.pk)
    runs = []
    for tick in schedule.ticks.filter(run__isnull=False).select_related("run", "schedule"):
        tick.run.schedule_label = scheduled_run_label(tick)
        runs.append(tick.run)
    Run.objects.bulk_update(runs, ["schedule_label"], batch_size=500)
    tick_count = schedule.ticks.count()
    name = schedule.name
    schedule.delete()
    audit(
        team=schedule.team,
        user=user,
        action="schedule.deleted",
        target=f"schedule {name}",
        ticks=tick_count,
        runs=len(runs),
    )
    return len(runs)


def _pins(schedule: Schedule) -> dict[int, int]:
    return {int(k): int(v) for k, v in (schedule.bindings or {}).items() if v != LATEST}


def _active_run(schedule: Schedule) -> Run | None:
    return (
        Run.objects.filter(schedule_tick__schedule=schedule, status__in=ACTIVE_STATES).order_by("-created_at").first()
    )


def _fire(tick: ScheduleTick, *, user=None) -> ScheduleTick:
    """Start the tick's run: the schedule's pinned version, its dataset bindings. Refused: the tick fails."""
    schedule = tick.schedule
    try:
        with transaction.atomic():
            run = run_create(
                pipeline=schedule.pipeline,
                user=user,
                version=schedule.pipeline_version,
                name=schedule.pipeline.name,
                dataset_versions=_pins(schedule),
                gate=schedule.gate,
            )
            tick.run, tick.outcome = run, TickOutcome.FIRED
            tick.save(update_fields=["run", "outcome", "reason"])
    except RunError as exc:
        tick.outcome, tick.reason = TickOutcome.FAILED, f"the run could not start: {exc}"
        tick.save(update_fields=["outcome", "reason"])
    return tick


def _window_handle_count(schedule: Schedule) -> int:
    return schedule.ticks.filter(manual=False, outcome__in=[TickOutcome.FIRED, TickOutcome.QUEUED]).count()


def _window_stale(schedule: Schedule, window: datetime) -> bool:
    """Checked again under the schedule's lock: what a pass computed before it may be out of date (another
    pass handled a later window, used the last of max_runs, or someone paused the schedule meanwhile)."""
    if schedule.paused:
        return True
    if schedule.ticks.filter(manual=False, window__gt=window).exists():
        return True
    return schedule.max_runs is not None and _window_handle_count(schedule) >= schedule.max_runs


def _window_handle(*, schedule_id: int, window: datetime, manual: bool = False, user=None) -> ScheduleTick | None:
    """Handle one window: insert its tick (or do nothing if it exists), then fire, queue or skip it."""
    with transaction.atomic():
        schedule = (
            Schedule.objects.select_for_update().select_related("pipeline", "pipeline_version").get(pk=schedule_id)
        )
        if not manual and _window_stale(schedule, window):
            return None
        active = _active_run(schedule)
        waiting = schedule.ticks.filter(outcome=TickOutcome.QUEUED).exists()
        decision = Decision("fire") if manual else decide(schedule.overlap, active, waiting=waiting)
        outcome = {
            "fire": TickOutcome.FIRED,
            "replace": TickOutcome.FIRED,
            "queue": TickOutcome.QUEUED,
            "skip": TickOutcome.SKIPPED,
        }[decision.action]
        try:
            with transaction.atomic():
                tick = ScheduleTick.objects.create(
                    schedule=schedule, window=window, manual=manual, outcome=outcome, reason=decision.reason
                )
        except IntegrityError:
            return None  # this window was handled already (another beat, a retry): fire nothing
        if decision.action == "replace":
            try:
                run_cancel(run=active, user=None)
            except Exception as exc:  # noqa: BLE001 - it ended meanwhile: start anyway
                log.info("schedule %s: replacing run #%s: %s", schedule.pk, active.number, exc)
        if outcome == TickOutcome.FIRED:
            _fire(tick, user=user)
        return tick


def _queued_promote(schedule_id: int) -> ScheduleTick | None:
    """Start the waiting window once the schedule's previous run has finished."""
    with transaction.atomic():
        schedule = (
            Schedule.objects.select_for_update().select_related("pipeline", "pipeline_version").get(pk=schedule_id)
        )
        tick = schedule.ticks.filter(outcome=TickOutcome.QUEUED).order_by("window").first()
        if tick is None or _active_run(schedule) is not None:
            return None
        tick.reason = f"{tick.reason}; started when it finished"
        return _fire(tick)


def _failure_check(schedule: Schedule) -> bool:
    """Pause after `failure_limit` consecutive failures (a run that failed, or a window whose run could not
    start), counting only windows since the last resume. Returns whether it paused."""
    n = schedule.failure_limit
    if not n or schedule.paused:
        return False
    ticks = schedule.ticks.filter(outcome__in=[TickOutcome.FIRED, TickOutcome.FAILED]).select_related("run")
    if schedule.resumed_at:
        ticks = ticks.filter(created_at__gte=schedule.resumed_at)
    recent = list(ticks.order_by("-window")[:n])
    if len(recent) < n:
        return False
    if not all(
        t.outcome == TickOutcome.FAILED or (t.run is not None and t.run.status == Status.FAILED) for t in recent
    ):
        return False
    names = ", ".join(f"run #{t.run.number}" if t.run else "a run that could not start" for t in reversed(recent))
    schedule_pause(schedule=schedule, user=None, reason=f"paused itself after {n} failed runs in a row ({names})")
    return True


def schedule_tick(*, schedule: Schedule, now: datetime) -> list[ScheduleTick]:
    """One beat pass over one schedule: pause it after too many failures, start a waiting window whose turn
    has come, then handle every due window. Safe to run any number of times at once."""
    if _failure_check(schedule):
        return []
    if schedule.ticks.filter(outcome=TickOutcome.QUEUED).exists():  # cheap check before taking the lock
        _queued_promote(schedule.pk)
    scheduled = schedule.ticks.filter(manual=False)
    last = scheduled.aggregate(w=Max("window"))["w"]
    fired = _window_handle_count(schedule)
    newest = None
    if schedule.trigger == Trigger.DATASET:
        latest_ids = [int(k) for k, v in (schedule.bindings or {}).items() if v == LATEST]
        newest = DatasetVersion.objects.filter(dataset_id__in=latest_ids, dataset__team=schedule.team).aggregate(
            t=Max("created_at")
        )["t"]
    handled = []
    for window in due_windows(schedule, now, last, fired=fired, newest_data_at=newest):
        tick = _window_handle(schedule_id=schedule.pk, window=window)
        if tick is not None:
            handled.append(tick)
    return handled


# A schedule whose end passed still gets passes for a day: its waiting window and its failure check.
_GRACE = timedelta(days=1)


def schedule_tick_all(now: datetime | None = None) -> list[ScheduleTick]:
    """Beat's pass over every active schedule (jobs.schedules_tick). A broken schedule is logged and does not
    stop the others."""
    now = now or timezone.now()
    handled: list[ScheduleTick] = []
    active = Schedule.objects.filter(paused=False).filter(Q(end_at__isnull=True) | Q(end_at__gte=now - _GRACE))
    for schedule in active.select_related("team", "pipeline", "pipeline_version").order_by("pk"):
        try:
            handled += schedule_tick(schedule=schedule, now=now)
        except Exception:  # noqa: BLE001 - one schedule must not stop the beat for every team
            log.exception("schedule %s (%s): tick failed", schedule.pk, schedule.name)
    return handled


def schedule_run_now(*, schedule: Schedule, user) -> ScheduleTick:
    """Start a run now (a manual window: the current instant), whatever the overlap policy and pause."""
    now = timezone.now().replace(microsecond=0)
    tick = _window_handle(schedule_id=schedule.pk, window=now, manual=True, user=user)
    while tick is None:  # two clicks inside one second: the next second is a window of its own
        now += timedelta(seconds=1)
        tick = _window_handle(schedule_id=schedule.pk, window=now, manual=True, user=user)
    audit(
        team=schedule.team,
        user=user,
        action="schedule.run_now",
        target=f"schedule {schedule.name}",
        run=f"#{tick.run.number}" if tick.run else "",
        outcome=tick.outcome,
    )
    return tick


__all__ = [
    "ScheduleError",
    "schedule_create",
    "schedule_update",
    "schedule_delete",
    "schedule_pause",
    "schedule_resume",
    "schedule_run_now",
    "scheduled_run_label",
    "schedule_tick",
    "schedule_tick_all",
    "version_dataset_ids",
]

"""Reads of schedules, always within one team."""

from __future__ import annotations

from django.db.models import QuerySet
from django.utils import timezone

from refinery.schedules.models import Schedule, ScheduleTick, TickOutcome
from refinery.schedules.windows import WindowError, next_fire_times
from refinery.teams.models import Team


def schedule_list(*, team: Team) -> QuerySet[Schedule]:
    return Schedule.objects.filter(team=team).select_related("pipeline", "pipeline_version")


def schedule_get(*, team: Team, pk: int) -> Schedule:
    """The team's schedule; Schedule.DoesNotExist for another team's (its pages answer 404)."""
    return schedule_list(team=team).get(pk=pk)


def schedule_ticks(*, schedule: Schedule, limit: int = 50) -> list[ScheduleTick]:
    return list(schedule.ticks.select_related("run", "schedule").order_by("-window")[:limit])


def schedule_next_fires(*, schedule: Schedule, count: int = 3) -> list:
    """The next `count` windows from now (none for a dataset trigger, or once max_runs is used up)."""
    if (
        schedule.max_runs is not None
        and schedule.ticks.filter(manual=False, outcome__in=[TickOutcome.FIRED, TickOutcome.QUEUED]).count()
        >= schedule.max_runs
    ):
        return []
    try:
        return next_fire_times(schedule, after=timezone.now(), count=count)
    except WindowError:
        return []


def schedule_list_rows(*, team: Team, recent: int = 5) -> list[Schedule]:
    """The team's schedules for the list page, each with `.next_fire` and `.recent` (its last ticks)."""
    schedules = list(schedule_list(team=team))
    for schedule in schedules:
        fires = schedule_next_fires(schedule=schedule, count=1)
        schedule.next_fire = schedule.local_label(fires[0]) if fires else None
        schedule.recent = list(reversed(schedule.ticks.select_related("run").order_by("-window")[:recent]))
    return schedules


__all__ = ["schedule_list", "schedule_get", "schedule_ticks", "schedule_next_fires", "schedule_list_rows"]

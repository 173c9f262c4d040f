from django.core.management.base import BaseCommand, CommandError
from django.db.models import Q

from refinery.core.units import format_bytes, format_duration
from refinery.teams.models import Team, TeamQuota
from refinery.teams.quotas import (
    parse_duration,
    parse_size,
    team_limits,
    team_quota_reset,
    team_quota_set,
    team_usage,
)

NO_LIMIT = ("none", "unlimited", "-")


def _count(text: str) -> int | None:
    if text.strip().lower() in NO_LIMIT:
        return None
    if not text.strip().isdigit():
        raise CommandError(f"{text!r} is not a whole number (or 'none' for no limit)")
    return int(text)


def _parsed(parse, text: str) -> int | None:
    if text.strip().lower() in NO_LIMIT:
        return None
    try:
        return parse(text)
    except ValueError as exc:
        raise CommandError(str(exc)) from None


class Command(BaseCommand):
    help = (
        "Set or show a team's quotas (running stages, queued runs, wall-clock budget per stage, dataset "
        "storage). 'none' means no limit; --reset goes back to the REFINERY_QUOTA_* defaults."
    )

    def add_arguments(self, parser):
        parser.add_argument("team", help="team slug or name")
        parser.add_argument("--running-stages", help="stages running at once (the rest wait queued)")
        parser.add_argument("--queued-runs", help="unfinished (queued or running) runs")
        parser.add_argument("--stage-seconds", help="wall-clock budget of one stage: seconds, or 2h, 90m, 1h30m")
        parser.add_argument("--storage", help="total dataset storage: bytes, or 50GiB, 500MB")
        parser.add_argument("--reset", action="store_true", help="drop the team's own limits (use the defaults)")
        parser.add_argument("--show", action="store_true", help="print the limits and usage (the default)")

    def handle(
        self,
        *args,
        team,
        running_stages=None,
        queued_runs=None,
        stage_seconds=None,
        storage=None,
        reset=False,
        show=False,
        **options,
    ):
        team_obj = Team.objects.filter(Q(slug=team) | Q(name=team)).first()
        if team_obj is None:
            raise CommandError(f"no team with the slug or name {team!r}")
        changes = {}
        if running_stages is not None:
            changes["running_stages"] = _count(running_stages)
        if queued_runs is not None:
            changes["queued_runs"] = _count(queued_runs)
        if stage_seconds is not None:
            changes["stage_seconds"] = _parsed(parse_duration, stage_seconds)
        if storage is not None:
            changes["storage_bytes"] = _parsed(parse_size, storage)
        if reset and changes:
            raise CommandError("--reset drops every limit of the team; give it alone")
        if reset:
            team_quota_reset(team=team_obj)
        elif changes:
            try:
                team_quota_set(team=team_obj, **changes)
            except ValueError as exc:
                raise CommandError(str(exc)) from None
        self._show(team_obj)

    def _show(self, team: Team) -> None:
        limits, usage = team_limits(team=team), team_usage(team=team)
        own = TeamQuota.objects.filter(team=team).exists()
        source = "set for this team" if own else "the defaults (REFINERY_QUOTA_*)"

        def limit(value, fmt=str):
            return "no limit" if value is None else fmt(value)

        self.stdout.write(f"team {team.name!r} ({team.slug}): limits are {source}")
        self.stdout.write(f"  running stages: {usage.running_stages} of {limit(limits.running_stages)}")
        self.stdout.write(f"  queued runs:    {usage.queued_runs} of {limit(limits.queued_runs)}")
        self.stdout.write(f"  stage budget:   {limit(limits.stage_seconds, format_duration)}")
        self.stdout.write(
            f"  storage:        {format_bytes(usage.storage_bytes)} of {limit(limits.storage_bytes, format_bytes)}"
        )

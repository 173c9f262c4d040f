"""A schedule binds a pinned pipeline version to a trigger; each trigger window is one ScheduleTick row.

The unique (schedule, window) key is what makes a schedule fire once per window: the only way a scheduled
run starts is by inserting its tick row first, so a second beat, a retried task or a restart that computes
the same window gets an IntegrityError and does nothing.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from refinery.pipelines.models import Pipeline, PipelineVersion
from refinery.teams.models import Team


class Trigger(models.TextChoices):
    CRON = "cron", "Cron"
    INTERVAL = "interval", "Interval"
    DATASET = "dataset", "New dataset version"


class Overlap(models.TextChoices):
    SKIP = "skip", "Skip"
    QUEUE = "queue", "Queue (at most one waiting)"
    REPLACE = "replace", "Replace (cancel the running one)"


class CatchUp(models.TextChoices):
    LATEST = "latest", "Latest missed window only"
    ALL = "all", "Every missed window (up to the limit)"


class Schedule(models.Model):
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="schedules")
    name = models.CharField(max_length=100)
    pipeline = models.ForeignKey(Pipeline, on_delete=models.CASCADE, related_name="schedules")
    # RESTRICT: a version cannot go while a schedule runs it, but deleting the team or pipeline takes both.
    pipeline_version = models.ForeignKey(PipelineVersion, on_delete=models.RESTRICT, related_name="schedules")
    trigger = models.CharField(max_length=16, choices=Trigger.choices, default=Trigger.INTERVAL)
    cron = models.CharField(max_length=100, blank=True, help_text="five-field cron expression")
    timezone = models.CharField(max_length=64, default="UTC", help_text="IANA time zone of the cron expression")
    interval_seconds = models.PositiveIntegerField(null=True, blank=True)
    debounce_seconds = models.PositiveIntegerField(
        default=60, help_text="dataset trigger: wait this long after the newest version before firing"
    )
    bindings = models.JSONField(
        default=dict, blank=True, help_text='{"<dataset id>": "latest" | <dataset version id>} for every dataset read'
    )
    start_at = models.DateTimeField(null=True, blank=True)
    end_at = models.DateTimeField(null=True, blank=True)
    max_runs = models.PositiveIntegerField(null=True, blank=True)
    gate = models.JSONField(
        null=True,
        blank=True,
        default=None,
        help_text='a promotion gate added to every run: {"candidate": <stage>, "dataset_id": '
        '<held-out dataset>, "config": {<gate config>}} (pipelines.specs.spec_with_gate)',
    )
    overlap = models.CharField(max_length=16, choices=Overlap.choices, default=Overlap.SKIP)
    catch_up = models.CharField(max_length=16, choices=CatchUp.choices, default=CatchUp.LATEST)
    catch_up_limit = models.PositiveIntegerField(default=10)
    failure_limit = models.PositiveIntegerField(
        default=3, help_text="pause after this many failed runs in a row (0: never)"
    )
    paused = models.BooleanField(default=False)
    paused_reason = models.CharField(max_length=300, blank=True)
    resumed_at = models.DateTimeField(null=True, blank=True, help_text="windows before it are never caught up")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["team", "name"], name="schedule_unique_team_name")]

    def __str__(self) -> str:
        return self.name

    def local_label(self, moment) -> str:
        """An instant in the schedule's time zone: "2026-12-05 02:00 Europe/Paris" (seconds when not 0)."""
        from refinery.schedules.windows import zone

        try:
            local = moment.astimezone(zone(self.timezone))
        except ValueError:
            local = moment
        return local.strftime("%Y-%m-%d %H:%M:%S" if local.second else "%Y-%m-%d %H:%M") + f" {self.timezone}"

    @property
    def trigger_label(self) -> str:
        if self.trigger == Trigger.CRON:
            return f"cron {self.cron} ({self.timezone})"
        if self.trigger == Trigger.INTERVAL:
            return f"every {_seconds_label(self.interval_seconds or 0)}"
        return f"new dataset version, after {_seconds_label(self.debounce_seconds)}"


def _seconds_label(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


class TickOutcome(models.TextChoices):
    FIRED = "fired", "Fired"
    SKIPPED = "skipped", "Skipped"
    FAILED = "failed", "Failed"
    QUEUED = "queued", "Queued"


class ScheduleTick(models.Model):
    schedule = models.ForeignKey(Schedule, on_delete=models.CASCADE, related_name="ticks")
    window = models.DateTimeField(help_text="the scheduled instant (UTC)")
    manual = models.BooleanField(default=False, help_text="'run now'")
    outcome = models.CharField(max_length=16, choices=TickOutcome.choices)
    reason = models.TextField(blank=True)
    run = models.OneToOneField(
        "runs.Run", null=True, blank=True, on_delete=models.SET_NULL, related_name="schedule_tick"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-window"]
        constraints = [models.UniqueConstraint(fields=["schedule", "window"], name="scheduletick_unique_window")]

    def __str__(self) -> str:
        return f"{self.schedule} @ {self.window:%Y-%m-%d %H:%M:%S}"

    @property
    def window_label(self) -> str:
        return self.schedule.local_label(self.window)

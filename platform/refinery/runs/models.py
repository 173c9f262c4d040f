from __future__ import annotations

from django.conf import settings
from django.contrib.postgres.search import SearchVectorField
from django.db import models
from django.utils import timezone

from refinery.pipelines.models import Pipeline, PipelineVersion
from refinery.teams.models import Team


class Status(models.TextChoices):
    PENDING = "pending", "Pending"  # waiting for earlier stages
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    CANCELING = "canceling", "Canceling"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELED = "canceled", "Canceled"


ACTIVE_STATES = frozenset({Status.PENDING, Status.QUEUED, Status.RUNNING, Status.CANCELING})
TERMINAL_STATES = frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELED})

# The only legal moves of a stage run; everything else is refused.
STAGE_TRANSITIONS: dict[str, frozenset[str]] = {
    Status.PENDING: frozenset({Status.QUEUED, Status.CANCELED, Status.FAILED}),
    Status.QUEUED: frozenset({Status.RUNNING, Status.CANCELED, Status.FAILED}),
    Status.RUNNING: frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELING, Status.CANCELED, Status.QUEUED}),
    Status.CANCELING: frozenset({Status.CANCELED, Status.FAILED, Status.SUCCEEDED}),
    Status.SUCCEEDED: frozenset(),
    Status.FAILED: frozenset(),
    Status.CANCELED: frozenset(),
}


class IllegalTransition(Exception):
    pass


class Run(models.Model):
    """One execution of a pipeline, with a frozen snapshot of everything it depends on."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="runs")
    pipeline = models.ForeignKey(Pipeline, null=True, on_delete=models.SET_NULL, related_name="runs")
    pipeline_version = models.ForeignKey(
        PipelineVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="runs"
    )
    rerun_of = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="reruns",
        help_text="the run whose snapshot this one repeats or re-resolves",
    )
    number = models.PositiveIntegerField(help_text="per-team run number")
    name = models.CharField(max_length=200)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True)
    snapshot = models.JSONField(default=dict)
    seed = models.BigIntegerField()
    code_version = models.CharField(max_length=64)
    mlflow_experiment_id = models.CharField(max_length=64, blank=True)
    mlflow_run_id = models.CharField(max_length=64, blank=True)
    mlflow_ended_at = models.DateTimeField(null=True, blank=True, help_text="when the MLflow parent run was closed")
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    schedule_label = models.CharField(
        max_length=300,
        blank=True,
        help_text="which schedule and window started the run, kept when that schedule is deleted (its tick, "
        'which the pages read otherwise, goes with it): "schedule nightly-sft, window 2026-12-05 '
        '02:00 Europe/Paris"',
    )

    class Meta:
        ordering = ["-created_at"]
        constraints = [models.UniqueConstraint(fields=["team", "number"], name="run_unique_team_number")]

    def __str__(self) -> str:
        return f"#{self.number} {self.name}"

    @property
    def is_finished(self) -> bool:
        return self.status in TERMINAL_STATES

    @property
    def duration(self):
        if not self.started_at:
            return None
        return (self.finished_at or timezone.now()) - self.started_at


class StageRun(models.Model):
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="stages")
    index = models.PositiveSmallIntegerField()
    name = models.CharField(max_length=100)
    method = models.CharField(max_length=32)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    spec = models.JSONField(default=dict, help_text="resolved stage: config, adapter, datasets, input")
    attempt = models.PositiveSmallIntegerField(default=0)
    max_attempts = models.PositiveSmallIntegerField(default=3)
    worker = models.CharField(max_length=200, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True, db_index=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    step = models.PositiveIntegerField(default=0)
    total_steps = models.PositiveIntegerField(default=0)
    epoch = models.FloatField(default=0)
    trainable_params = models.BigIntegerField(null=True, blank=True)
    total_params = models.BigIntegerField(null=True, blank=True)
    mlflow_run_id = models.CharField(max_length=64, blank=True)
    outputs = models.JSONField(default=dict, blank=True)
    summary = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    log_tail = models.TextField(blank=True)
    queued_at = models.DateTimeField(null=True, blank=True)
    dispatched_at = models.DateTimeField(null=True, blank=True, help_text="when the last wake-up was sent")
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["run", "index"]
        constraints = [models.UniqueConstraint(fields=["run", "index"], name="stagerun_unique_index")]

    def __str__(self) -> str:
        return f"{self.run} / {self.name}"

    @property
    def is_finished(self) -> bool:
        return self.status in TERMINAL_STATES

    @property
    def progress(self) -> float:
        if self.status == Status.SUCCEEDED:
            return 1.0
        if not self.total_steps:
            return 0.0
        return min(1.0, self.step / self.total_steps)

    @property
    def duration(self):
        if not self.started_at:
            return None
        return (self.finished_at or timezone.now()) - self.started_at

    # Guarded transitions: models refuse illegal moves; services decide when.
    def _move(self, target: str) -> None:
        if target not in STAGE_TRANSITIONS[self.status]:
            raise IllegalTransition(f"stage {self.name!r}: cannot go from {self.status} to {target}")
        self.status = target

    def mark_queued(self) -> None:
        self._move(Status.QUEUED)
        self.queued_at = self.dispatched_at = timezone.now()

    def mark_running(self, *, worker: str, lease_seconds: float) -> None:
        self._move(Status.RUNNING)
        now = timezone.now()
        self.worker = worker
        self.attempt += 1
        self.started_at = self.started_at or now
        self.heartbeat_at = now
        self.lease_expires_at = now + timezone.timedelta(seconds=lease_seconds)

    def mark_canceling(self) -> None:
        self._move(Status.CANCELING)

    def mark_finished(self, status: str, *, error: str = "") -> None:
        if status not in TERMINAL_STATES:
            raise IllegalTransition(f"{status} is not a terminal state")
        self._move(status)
        self.finished_at = timezone.now()
        self.lease_expires_at = None
        if error:
            self.error = error


class StageMetric(models.Model):
    """A metric point, keyed by step so that a resumed stage never duplicates a point."""

    stage_run = models.ForeignKey(StageRun, on_delete=models.CASCADE, related_name="metrics")
    key = models.CharField(max_length=100)
    step = models.PositiveIntegerField()
    value = models.FloatField()
    timestamp = models.FloatField()

    class Meta:
        ordering = ["stage_run", "key", "step"]
        constraints = [models.UniqueConstraint(fields=["stage_run", "key", "step"], name="stagemetric_unique_point")]


class RunNote(models.Model):
    """A note a team member left on a run; searchable from the runs list."""

    MAX_LENGTH = 5000

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="notes")
    author = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    body = models.TextField(max_length=MAX_LENGTH)
    # The body's English full-text vector, kept by a PostgreSQL trigger (migration 0005); unused on SQLite.
    search = SearchVectorField(null=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "pk"]

    def __str__(self) -> str:
        return f"{self.run}: {self.body[:40]}"


class RunTag(models.Model):
    """A short label on a run ("baseline", "paper-v2"), at most once per run. `team` repeats the run's team
    so that the team's tag names are one index scan."""

    MAX_LENGTH = 40

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="+")
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="tags")
    name = models.CharField(max_length=MAX_LENGTH)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["run", "name"], name="runtag_unique_run_name")]
        indexes = [models.Index(fields=["team", "name"], name="runtag_team_name")]

    def __str__(self) -> str:
        return self.name


class RunMetric(models.Model):
    """One final number of a run ("<stage>/<key>", as sweeps name a stage summary's numbers), copied out of
    the stage summaries when a stage finishes so that the runs list can sort by any of them in SQL."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="+")
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="summary_metrics")
    key = models.CharField(max_length=200)
    value = models.FloatField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "key"], name="runmetric_unique_run_key")]
        indexes = [models.Index(fields=["team", "key", "value"], name="runmetric_team_key_value")]

    def __str__(self) -> str:
        return f"{self.run_id} {self.key}={self.value}"

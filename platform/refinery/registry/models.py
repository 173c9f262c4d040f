"""Promoted models: a team's registered models, their versions (stage outputs promoted into the MLflow Model
Registry), the aliases that point at them (mirrored from MLflow) and the history of every alias change.

A version holds on to the run and the stage that made it with `on_delete=RESTRICT`: the version's files are
that stage's MLflow artifacts and its lineage is that run's snapshot, so a run with a registered output cannot
be deleted on its own (RestrictedError), which PROTECT would also give; unlike PROTECT, RESTRICT still lets the
team be deleted as a whole, because its registered models (and so these versions) go in the same cascade.
SET_NULL was rejected: a registered model whose run silently disappears has no lineage left to show.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from refinery.runs.models import Run, StageRun
from refinery.teams.models import Team

PROMOTABLE_KINDS = ("model", "adapter")  # stage outputs that can become a version (not an evaluation "report")


class RegisteredModel(models.Model):
    """A named model of a team; its versions live in MLflow under `mlflow_name` (team-prefixed, never shown)."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="registered_models")
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True)
    mlflow_name = models.CharField(
        max_length=255, unique=True, help_text="the registered model's name in MLflow (unique server-wide)"
    )
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["team", "name"], name="registeredmodel_unique_team_name")]

    def __str__(self) -> str:
        return self.name


class ModelVersion(models.Model):
    """One stage output registered as a version of a model, with what it scored and where it came from.

    `metrics` (copied at promotion): {"stage": {key: number} of the stage's summary, "evaluations": [{"stage",
    "target", "retention", "metrics"}] of the run's evaluate stages that measured this output, "headline":
    [{"key", "value", "better"}] for tables, "pending": [evaluate stages not finished yet]}.
    `lineage`: see refinery.registry.lineage.stage_lineage.
    """

    class Kind(models.TextChoices):
        MODEL = "model", "Model"
        ADAPTER = "adapter", "Adapter"

    registered_model = models.ForeignKey(RegisteredModel, on_delete=models.CASCADE, related_name="versions")
    version = models.PositiveIntegerField(help_text="MLflow's version number")
    stage_run = models.ForeignKey(StageRun, on_delete=models.RESTRICT, related_name="model_versions")
    run = models.ForeignKey(Run, on_delete=models.RESTRICT, related_name="model_versions")
    mlflow_run_id = models.CharField(max_length=64)
    artifact_path = models.CharField(max_length=200)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    metrics = models.JSONField(default=dict, blank=True)
    lineage = models.JSONField(default=dict, blank=True)
    promoted_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    promoted_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["registered_model", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["registered_model", "version"], name="modelversion_unique_version")
        ]

    def __str__(self) -> str:
        return f"{self.registered_model} v{self.version}"

    @property
    def source_uri(self) -> str:
        return f"runs:/{self.mlflow_run_id}/{self.artifact_path}"


class ModelAlias(models.Model):
    """Where an alias points now: a mirror of MLflow's aliases, so that pages never ask MLflow per row."""

    registered_model = models.ForeignKey(RegisteredModel, on_delete=models.CASCADE, related_name="aliases")
    alias = models.CharField(max_length=64)
    version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="aliases")
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["registered_model", "alias"]
        constraints = [models.UniqueConstraint(fields=["registered_model", "alias"], name="modelalias_unique_alias")]

    def __str__(self) -> str:
        return f"{self.registered_model}@{self.alias}"


class AliasEvent(models.Model):
    """One change of an alias (the audit history): set to `version` (from `previous_version`), removed (it
    pointed at `previous_version`), or rolled back to `version` (from `previous_version`)."""

    class Action(models.TextChoices):
        SET = "set", "Set"
        REMOVED = "removed", "Removed"
        ROLLED_BACK = "rolled_back", "Rolled back"
        KEPT = "kept", "Kept by a gate"  # a gate (or its reviewer) kept the holder: history only, no change

    registered_model = models.ForeignKey(RegisteredModel, on_delete=models.CASCADE, related_name="alias_events")
    alias = models.CharField(max_length=64)
    version = models.ForeignKey(ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    previous_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    action = models.CharField(max_length=16, choices=Action.choices)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    at = models.DateTimeField(default=timezone.now)
    gate = models.ForeignKey(
        "GateDecision",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="alias_events",
        help_text="the gate decision that made this change",
    )
    note = models.CharField(max_length=500, blank=True, help_text="why, in words (a gate's decision)")

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["registered_model", "alias", "id"], name="aliasevent_model_alias")]

    def __str__(self) -> str:
        return f"{self.registered_model}@{self.alias} {self.action}"


def rollback_target(events: list[AliasEvent]) -> tuple[bool, ModelVersion | None]:
    """Where a rollback would point an alias, from its history (oldest first): (possible, version).

    Each set or removal remembers where the alias pointed before it; a rollback undoes the latest change
    that is not undone yet, so repeated rollbacks walk back through the history. Not possible when there
    is no change left to undo, or when the alias was not set before that change (demote it instead)."""
    stack: list[ModelVersion | None] = []
    for event in events:
        if event.action == AliasEvent.Action.KEPT:
            continue  # nothing changed
        if event.action == AliasEvent.Action.ROLLED_BACK:
            if stack:
                stack.pop()
        else:
            stack.append(event.previous_version)
    if not stack or stack[-1] is None:
        return False, None
    return True, stack[-1]


class GateDecision(models.Model):
    """What a gate stage decided about its candidate (the output of the stage it takes as input) against the
    alias's holder when it ran (the champion), with the numbers, and what became of it.

    One per gate stage (a retried stage finds its decision and does not decide twice). `numbers` is the
    trainer's decision (trainers.gates.gate_decide: metric, candidate, champion, gain, forgetting, checks, ...);
    `message` the one line shown everywhere ("kept champion v7: exact match 0.81 vs 0.83; ...")."""

    class Outcome(models.TextChoices):
        PROMOTED = "promoted", "Promoted"
        KEPT = "kept", "Kept the champion"
        AWAITING_APPROVAL = "awaiting_approval", "Awaiting approval"
        APPROVED = "approved", "Approved and promoted"
        REJECTED = "rejected", "Rejected by a reviewer"
        STALE = "stale", "Not promoted: the alias moved"

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="gate_decisions")
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="gate_decisions")
    stage_run = models.OneToOneField(StageRun, on_delete=models.CASCADE, related_name="gate_decision")
    candidate_stage = models.CharField(max_length=64)
    model_name = models.CharField(max_length=100)
    alias = models.CharField(max_length=64)
    registered_model = models.ForeignKey(
        RegisteredModel, null=True, blank=True, on_delete=models.SET_NULL, related_name="gate_decisions"
    )
    champion = models.ForeignKey(
        ModelVersion,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="the holder the candidate was compared with (none: the first)",
    )
    candidate = models.ForeignKey(
        ModelVersion,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="gate_decisions",
        help_text="the version registered for the candidate",
    )
    passed = models.BooleanField()
    outcome = models.CharField(max_length=24, choices=Outcome.choices)
    numbers = models.JSONField(default=dict, blank=True)
    message = models.CharField(max_length=1000)
    require_approval = models.BooleanField(default=False)
    decided_at = models.DateTimeField(default=timezone.now)
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    reviewed_at = models.DateTimeField(null=True, blank=True)
    review_note = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["-decided_at", "-id"]
        indexes = [models.Index(fields=["team", "outcome"], name="gatedecision_team_outcome")]

    def __str__(self) -> str:
        return f"gate of run #{self.run.number}: {self.outcome}"

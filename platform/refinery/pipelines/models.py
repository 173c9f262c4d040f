from __future__ import annotations

from django.conf import settings
from django.db import models

from refinery.basemodels.models import BaseModel
from refinery.teams.models import Team


class Pipeline(models.Model):
    """A named graph of post-training stages on a base model; `spec` and `base_model` are its current version.

    `spec` = {"seed": int, "stages": [{"name", "method", "config", "adapter", "dataset_id",
    "eval_dataset_id", "input", "inputs"}], "retention_dataset_id"?, "auto_evaluate"?} where `input` is
    "base" or another stage's name and `inputs` (merge stages) lists several. It is validated by
    refinery.pipelines.specs. Every edit that changes it makes a new PipelineVersion; runs keep theirs.
    """

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="pipelines")
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True)
    base_model = models.ForeignKey(BaseModel, on_delete=models.PROTECT, related_name="pipelines")
    spec = models.JSONField(default=dict)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    version = models.PositiveIntegerField(default=1, help_text="number of the current version")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at"]
        constraints = [models.UniqueConstraint(fields=["team", "name"], name="pipeline_unique_team_name")]

    def __str__(self) -> str:
        return self.name

    @property
    def stages(self) -> list[dict]:
        return list(self.spec.get("stages", []))


class PipelineVersion(models.Model):
    """One saved state of a pipeline; immutable once written."""

    pipeline = models.ForeignKey(Pipeline, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    base_model = models.ForeignKey(BaseModel, on_delete=models.PROTECT, related_name="+")
    spec = models.JSONField(default=dict)
    description = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["pipeline", "-number"]
        constraints = [models.UniqueConstraint(fields=["pipeline", "number"], name="pipelineversion_unique_number")]

    def __str__(self) -> str:
        return f"{self.pipeline} v{self.number}"

    @property
    def stages(self) -> list[dict]:
        return list(self.spec.get("stages", []))

    @property
    def gate_stages(self) -> list[str]:
        """The names of the version's promotion gate stages (what a schedule of it promotes through)."""
        return [s.get("name", "") for s in self.stages if s.get("method") == "gate"]

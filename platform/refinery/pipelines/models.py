from __future__ import annotations

from django.conf import settings
from django.db import models

from refinery.basemodels.models import BaseModel
from refinery.teams.models import Team


class Pipeline(models.Model):
    """A named, ordered list of post-training stages on a base model.

    `spec` = {"seed": int, "stages": [{"name", "method", "config", "adapter",
    "dataset_id", "eval_dataset_id", "input"}]} where `input` is "base" or the
    name of an earlier stage. It is validated by refinery.pipelines.specs.
    """

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="pipelines")
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True)
    base_model = models.ForeignKey(BaseModel, on_delete=models.PROTECT, related_name="pipelines")
    spec = models.JSONField(default=dict)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
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

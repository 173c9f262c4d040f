from __future__ import annotations

from django.conf import settings
from django.db import models

from refinery.teams.models import Team


class BaseModel(models.Model):
    """A base language model: a Hugging Face hub id (+ revision) or a local directory."""

    class Source(models.TextChoices):
        HUB = "hub", "Hugging Face hub"
        LOCAL = "local", "Local path"

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="base_models")
    name = models.CharField(max_length=100)
    source = models.CharField(max_length=8, choices=Source.choices)
    name_or_path = models.CharField(max_length=500, help_text="hub id (org/name) or absolute local path")
    revision = models.CharField(max_length=100, blank=True, help_text="hub branch, tag or commit")
    description = models.TextField(blank=True)
    architecture = models.CharField(max_length=100, blank=True)
    parameter_count = models.BigIntegerField(null=True, blank=True)
    chat_template = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["team", "name"], name="basemodel_unique_team_name")]

    def __str__(self) -> str:
        return self.name

    @property
    def reference(self) -> str:
        return f"{self.name_or_path}@{self.revision}" if self.revision else self.name_or_path

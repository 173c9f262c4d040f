from __future__ import annotations

from django.conf import settings
from django.db import models

from refinery.pipelines.models import Pipeline, PipelineVersion
from refinery.runs.models import Run
from refinery.teams.models import Team

MAX_TRIALS = 64  # runs one sweep may queue


class Sweep(models.Model):
    """One pipeline version run over a grid or a random sample of its settings: one Run per trial.

    `parameters` = [{"path": "<stage>.config.<field>" | "<stage>.adapter.<field>", "values": [...]}
    | {"path", "min", "max", "scale": "linear" | "log"} (random mode only)], values coerced to the field's
    type. Results are ranked by `metric` ("<stage>/<key>" of the runs' stage summaries) towards `goal`.
    """

    class Mode(models.TextChoices):
        GRID = "grid", "Grid"
        RANDOM = "random", "Random"

    class Goal(models.TextChoices):
        MIN = "min", "Minimize"
        MAX = "max", "Maximize"

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="sweeps")
    pipeline = models.ForeignKey(Pipeline, null=True, on_delete=models.SET_NULL, related_name="sweeps")
    pipeline_version = models.ForeignKey(PipelineVersion, null=True, on_delete=models.SET_NULL, related_name="sweeps")
    name = models.CharField(max_length=100)
    mode = models.CharField(max_length=8, choices=Mode.choices, default=Mode.GRID)
    parameters = models.JSONField(default=list)
    samples = models.PositiveSmallIntegerField(default=0, help_text="trials drawn in random mode")
    metric = models.CharField(max_length=200)
    goal = models.CharField(max_length=3, choices=Goal.choices, default=Goal.MIN)
    seed = models.BigIntegerField(help_text="seed of the random draw (random mode)")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [models.UniqueConstraint(fields=["team", "name"], name="sweep_unique_team_name")]

    def __str__(self) -> str:
        return self.name

    @property
    def paths(self) -> list[str]:
        return [p["path"] for p in self.parameters]


class SweepTrial(models.Model):
    """One point of a sweep: its parameter values and the run that trains with them."""

    sweep = models.ForeignKey(Sweep, on_delete=models.CASCADE, related_name="trials")
    run = models.OneToOneField(Run, on_delete=models.CASCADE, related_name="sweep_trial")
    index = models.PositiveSmallIntegerField(help_text="1-based trial number")
    params = models.JSONField(default=dict, help_text="{path: value} set on the run (its overrides)")

    class Meta:
        ordering = ["sweep", "index"]
        constraints = [models.UniqueConstraint(fields=["sweep", "index"], name="sweeptrial_unique_index")]

    def __str__(self) -> str:
        return f"{self.sweep} #{self.index}"

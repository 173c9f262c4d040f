from __future__ import annotations

from django.conf import settings
from django.db import models
from trainers.dataset_kinds import DATASET_KIND_SPECS

from refinery.teams.models import Team

# The kinds are defined in trainers.dataset_kinds (the trainer reads the same ones); members are named by
# their value in capitals: DatasetKind.PROMPT_COMPLETION == "prompt_completion".
DatasetKind = models.TextChoices(
    "DatasetKind", [(kind.name.upper(), (kind.name, kind.label)) for kind in DATASET_KIND_SPECS.values()]
)


class Dataset(models.Model):
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="datasets")
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=32, choices=DatasetKind.choices)
    description = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["team", "name"], name="dataset_unique_team_name")]

    def __str__(self) -> str:
        return self.name

    @property
    def latest_version(self) -> DatasetVersion | None:
        return self.versions.order_by("-version").first()


class DatasetVersion(models.Model):
    """An immutable, content-addressed snapshot of a dataset file."""

    class Format(models.TextChoices):
        JSONL = "jsonl", "JSONL"
        CSV = "csv", "CSV"
        PARQUET = "parquet", "Parquet"

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="versions")
    version = models.PositiveIntegerField()
    sha256 = models.CharField(max_length=64)
    format = models.CharField(max_length=16, choices=Format.choices)
    original_filename = models.CharField(max_length=255)
    storage_path = models.CharField(max_length=500, help_text="relative to REFINERY_DATASET_DIR")
    size_bytes = models.BigIntegerField()
    row_count = models.PositiveIntegerField()
    columns = models.JSONField(default=list)
    stats = models.JSONField(default=dict)
    preview = models.JSONField(default=list)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-version"]
        constraints = [
            models.UniqueConstraint(fields=["dataset", "version"], name="datasetversion_unique_version"),
        ]

    def __str__(self) -> str:
        return f"{self.dataset.name} v{self.version}"

    @property
    def path(self):
        return settings.REFINERY_DATASET_DIR / self.storage_path

"""What validating a pipeline spec needs to know about the world, and nothing else: the team's datasets, the
base model's layout, the registry's rules for model and alias names. refinery.pipelines.specs validates the
graph; this is its only access to the database, the model files and other apps."""

from __future__ import annotations

from dataclasses import dataclass

from refinery.basemodels.services import local_model_layout
from refinery.data.models import Dataset
from refinery.registry.services import RegistryError, alias_clean, model_name_clean


@dataclass(frozen=True)
class SpecLookups:
    team: object
    base_model: object = None

    def dataset(self, dataset_id) -> tuple[Dataset | None, str | None]:
        """(the team's dataset, None), or (None, why it cannot be used)."""
        if dataset_id in (None, ""):
            return None, "choose a training dataset"
        try:
            pk = int(dataset_id)
        except (TypeError, ValueError):
            return None, f"dataset must be a dataset id, got {dataset_id!r}"
        dataset = Dataset.objects.filter(team=self.team, pk=pk).first()
        if dataset is None:
            return None, f"dataset #{pk} does not exist in this team"
        if not dataset.versions.exists():
            return None, f"dataset {dataset.name!r} has no version yet"
        return dataset, None

    def model_layout(self) -> tuple[list[str], int | None] | None:
        """(tensor names, layer count) of the base model when it is a local one that can be read; else None."""
        if self.base_model is None:
            return None
        return local_model_layout(self.base_model)

    def registry_name_problem(self, field: str, value: str) -> str | None:
        """Why `value` cannot be a registered model name (field "registered_model") or an alias ("alias")."""
        clean = model_name_clean if field == "registered_model" else alias_clean
        try:
            clean(value)
        except RegistryError as exc:
            return str(exc)
        return None

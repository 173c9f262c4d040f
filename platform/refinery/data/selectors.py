from __future__ import annotations

from django.db.models import Count, Max, QuerySet

from refinery.data.models import Dataset, DatasetVersion


def dataset_list(*, team, kind: str | None = None) -> QuerySet[Dataset]:
    qs = Dataset.objects.filter(team=team).annotate(
        version_count=Count("versions"), last_version_at=Max("versions__created_at")
    )
    if kind:
        qs = qs.filter(kind=kind)
    return qs.order_by("name")


def dataset_get(*, team, pk: int) -> Dataset:
    return Dataset.objects.get(team=team, pk=pk)


def dataset_version_get(*, team, dataset_pk: int, version: int | None = None) -> DatasetVersion:
    qs = DatasetVersion.objects.select_related("dataset").filter(dataset__team=team, dataset_id=dataset_pk)
    if version is None:
        return qs.order_by("-version").first() or qs.get()  # .get() raises DoesNotExist on none
    return qs.get(version=version)

from __future__ import annotations

from django.db.models import Count, Max, QuerySet

from refinery.data.models import Dataset


def dataset_list(*, team, kind: str | None = None) -> QuerySet[Dataset]:
    qs = Dataset.objects.filter(team=team).annotate(
        version_count=Count("versions"), last_version_at=Max("versions__created_at")
    )
    if kind:
        qs = qs.filter(kind=kind)
    return qs.order_by("name")


def dataset_get(*, team, pk: int) -> Dataset:
    return Dataset.objects.get(team=team, pk=pk)

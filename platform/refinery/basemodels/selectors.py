from __future__ import annotations

from django.db.models import QuerySet

from refinery.basemodels.models import BaseModel


def base_model_list(*, team) -> QuerySet[BaseModel]:
    return BaseModel.objects.filter(team=team).order_by("name")


def base_model_get(*, team, pk: int) -> BaseModel:
    return BaseModel.objects.select_related("created_by").get(team=team, pk=pk)


def base_model_exists(*, team, pk: int) -> bool:
    return BaseModel.objects.filter(team=team, pk=pk).exists()


def base_model_runs(*, team, model: BaseModel, limit: int = 200) -> list:
    """The team's runs built on this model (their frozen snapshot's base_model.id), newest first, each
    with its stages and its key metric (`run.key_metric`: the last train/loss, as on the runs list)."""
    from refinery.runs.selectors import run_list

    return list(
        run_list(team=team, key_metric="train/loss")
        .filter(snapshot__base_model__id=model.pk)
        .order_by("-number")[:limit]
    )

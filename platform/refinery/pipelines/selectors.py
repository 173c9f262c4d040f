from django.db.models import Count, QuerySet

from refinery.pipelines.models import Pipeline


def pipeline_list(*, team) -> QuerySet[Pipeline]:
    return Pipeline.objects.filter(team=team).select_related("base_model").annotate(run_count=Count("runs"))


def pipeline_get(*, team, pk: int) -> Pipeline:
    return Pipeline.objects.select_related("base_model").get(team=team, pk=pk)

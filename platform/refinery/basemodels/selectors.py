from django.db.models import QuerySet

from refinery.basemodels.models import BaseModel


def base_model_list(*, team) -> QuerySet[BaseModel]:
    return BaseModel.objects.filter(team=team).order_by("name")

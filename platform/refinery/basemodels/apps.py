from django.apps import AppConfig


class BasemodelsConfig(AppConfig):
    name = "refinery.basemodels"
    label = "basemodels"

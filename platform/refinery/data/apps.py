from django.apps import AppConfig


class DataConfig(AppConfig):
    name = "refinery.data"
    label = "data"

from django.apps import AppConfig


class PipelinesConfig(AppConfig):
    name = "refinery.pipelines"
    label = "pipelines"

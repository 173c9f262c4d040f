from django.apps import AppConfig


class RunsConfig(AppConfig):
    name = "refinery.runs"
    label = "runs"

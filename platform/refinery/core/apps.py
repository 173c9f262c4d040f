from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "refinery.core"
    label = "core"

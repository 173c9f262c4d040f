from django.apps import AppConfig


class ApiConfig(AppConfig):
    name = "refinery.api"
    label = "api"

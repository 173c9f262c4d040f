from django.apps import AppConfig


class TeamsConfig(AppConfig):
    name = "refinery.teams"
    label = "teams"

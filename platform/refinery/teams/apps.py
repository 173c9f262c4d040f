from django.apps import AppConfig


class TeamsConfig(AppConfig):
    name = "refinery.teams"
    label = "teams"

    def ready(self):
        from refinery.teams import signals  # noqa: F401 - connects the sign-in audit receivers

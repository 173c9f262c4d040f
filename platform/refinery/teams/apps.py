from django.apps import AppConfig


class TeamsConfig(AppConfig):
    name = "refinery.teams"
    label = "teams"

    def ready(self) -> None:
        from refinery.teams import (
            checks,  # noqa: F401 - registers the system checks
            signals,  # noqa: F401 - connects the sign-in audit receivers
        )

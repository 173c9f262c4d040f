from django.apps import AppConfig


class BasemodelsConfig(AppConfig):
    name = "refinery.basemodels"
    label = "basemodels"

    def ready(self) -> None:
        from refinery.basemodels import paths  # noqa: F401 - registers the model roots system check

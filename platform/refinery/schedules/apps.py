from django.apps import AppConfig


class SchedulesConfig(AppConfig):
    name = "refinery.schedules"
    label = "schedules"

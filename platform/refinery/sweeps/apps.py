from django.apps import AppConfig


class SweepsConfig(AppConfig):
    name = "refinery.sweeps"
    label = "sweeps"

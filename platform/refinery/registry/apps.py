from django.apps import AppConfig


class RegistryConfig(AppConfig):
    name = "refinery.registry"
    label = "registry"

from django.apps import AppConfig


class ApiserviceConfig(AppConfig):
    name = "apiservice"
    verbose_name = "Organisations and API keys"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the system checks)

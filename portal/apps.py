from django.apps import AppConfig


class PortalConfig(AppConfig):
    """The customer portal (/portal/) and the staff dashboards (/staff/): server-rendered pages."""

    name = "portal"
    default_auto_field = "django.db.models.BigAutoField"

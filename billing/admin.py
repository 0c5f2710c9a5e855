from django.contrib import admin

from .models import UsageRecord


@admin.register(UsageRecord)
class UsageRecordAdmin(admin.ModelAdmin):
    """The ledger is append-only: staff read it, nobody edits it here."""

    list_display = ["created_at", "organisation", "face", "model_version", "units", "status_code", "latency_ms"]
    list_filter = ["face", "status_code", "meter"]
    list_select_related = ["organisation", "model_version__model"]
    search_fields = ["request_id", "client_request_id", "organisation__name"]
    date_hierarchy = "created_at"

    def has_add_permission(self, request: object) -> bool:
        return False

    def has_change_permission(self, request: object, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: object, obj: object = None) -> bool:
        return False

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from . import services
from .models import Bundle


@admin.register(Bundle)
class BundleAdmin(admin.ModelAdmin):
    list_display = [
        "public_id",
        "model_version",
        "variants_key",
        "status",
        "progress",
        "size_bytes",
        "key_id",
        "created_at",
    ]
    list_filter = ["status"]
    search_fields = ["public_id", "model_version__model__name", "sha256"]
    list_select_related = ["model_version__model"]
    readonly_fields = [
        "public_id",
        "model_version",
        "variants_key",
        "status",
        "progress",
        "reason",
        "stored_file",
        "size_bytes",
        "sha256",
        "key_id",
        "report",
        "manifest",
        "build_seconds",
        "attempts",
        "created_at",
        "started_at",
        "finished_at",
    ]
    actions = ["rebuild"]

    @admin.display(description="File")
    def stored_file(self, obj: Bundle) -> str:
        """The stored name only: bundles are private (/media/ is not served); customers download them
        through signed URLs, staff through the API or the portal."""
        return str(obj.file.name) if obj.file else "-"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # bundles are requested through the API (or built on alias moves)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_rebuild_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("edge.change_bundle")

    @admin.action(description="Rebuild selected bundles", permissions=["rebuild"])
    def rebuild(self, request: HttpRequest, queryset: QuerySet[Bundle]) -> None:
        queued = sum(services.bundle_rebuild(bundle=bundle) for bundle in queryset)
        skipped = queryset.count() - queued
        messages.success(request, f"{queued} bundle(s) queued for rebuild; {skipped} still building, left alone.")

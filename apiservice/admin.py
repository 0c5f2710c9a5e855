from django.contrib import admin
from rest_framework_api_key.admin import APIKeyModelAdmin

from .models import APIKey, Membership, Organisation


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    raw_id_fields = ["user"]


@admin.register(Organisation)
class OrganisationAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "created_at"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}
    inlines = [MembershipInline]


@admin.register(APIKey)
class OrgAPIKeyAdmin(APIKeyModelAdmin):
    """The secret is shown once, on creation; only the prefix and hash are ever stored."""

    list_display = (*APIKeyModelAdmin.list_display, "organisation", "last_used_at")  # type: ignore[assignment]
    list_filter = (*APIKeyModelAdmin.list_filter, "organisation")  # type: ignore[assignment]
    list_select_related = ("organisation",)
    search_fields = ("prefix", "name", "organisation__name")  # type: ignore[assignment]
    readonly_fields = (*APIKeyModelAdmin.readonly_fields, "hashed_key", "last_used_at", "revoked_at")  # type: ignore[assignment]

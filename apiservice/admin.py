from django import forms
from django.contrib import admin
from rest_framework_api_key.admin import APIKeyModelAdmin

from .models import APIKey, Membership, Organisation, Scope


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


class APIKeyAdminForm(forms.ModelForm):
    # Checkboxes, not the JSON list's text box, which took any JSON (["bogus", 5]) as scopes.
    scopes = forms.MultipleChoiceField(choices=Scope.choices, widget=forms.CheckboxSelectMultiple)

    class Meta:
        model = APIKey
        fields = "__all__"  # noqa: DJ007  # the admin chooses the fields; this form only replaces scopes


@admin.register(APIKey)
class OrgAPIKeyAdmin(APIKeyModelAdmin):
    """The secret is shown once, on creation; only the prefix and hash are ever stored."""

    form = APIKeyAdminForm

    list_display = (*APIKeyModelAdmin.list_display, "organisation", "last_used_at")  # type: ignore[assignment]
    list_filter = (*APIKeyModelAdmin.list_filter, "organisation")  # type: ignore[assignment]
    list_select_related = ("organisation",)
    search_fields = ("prefix", "name", "organisation__name")  # type: ignore[assignment]
    readonly_fields = (*APIKeyModelAdmin.readonly_fields, "hashed_key", "last_used_at", "revoked_at")  # type: ignore[assignment]

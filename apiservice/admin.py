from typing import Any

from django import forms
from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from rest_framework_api_key.admin import APIKeyModelAdmin
from rest_framework_api_key.models import AbstractAPIKey
from rest_framework_api_key.models import APIKey as LibraryAPIKey

from .models import APIKey, Membership, Organisation, Scope
from .services import api_key_revoke


class TextPrimaryKeyAdmin(admin.ModelAdmin):
    """For models whose primary key is text: Django's admin looks an id from the URL up as given, and
    PostgreSQL refuses a NUL byte in text (a 500 for `/admin/.../%00/change/`). Such an id is no object."""

    def get_object(self, request: HttpRequest, object_id: str, from_field: str | None = None) -> Any:
        if "\x00" in object_id:
            return None
        return super().get_object(request, object_id, from_field)


# The library registers its own concrete APIKey: keys made there are not an organisation's and never
# authenticate. Staff make keys under Organisations' "API keys" (OrgAPIKeyAdmin below).
admin.site.unregister(LibraryAPIKey)


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
class OrgAPIKeyAdmin(TextPrimaryKeyAdmin, APIKeyModelAdmin):
    """The secret is shown once, on creation; only the prefix and hash are ever stored."""

    form = APIKeyAdminForm

    list_display = (*APIKeyModelAdmin.list_display, "organisation", "last_used_at")  # type: ignore[assignment]
    list_filter = (*APIKeyModelAdmin.list_filter, "organisation")  # type: ignore[assignment]
    list_select_related = ("organisation",)
    search_fields = ("prefix", "name", "organisation__name")  # type: ignore[assignment]
    readonly_fields = (*APIKeyModelAdmin.readonly_fields, "hashed_key", "last_used_at", "revoked_at")  # type: ignore[assignment]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        # The library's version returns only its own fields and would leave ours editable (a revocation
        # time could be cleared or backdated).
        return (*super().get_readonly_fields(request, obj), *self.readonly_fields)

    def save_model(self, request: HttpRequest, obj: AbstractAPIKey, form: Any = None, change: bool = False) -> None:
        # Ticking "revoked" goes through the service, as the portal does: it stamps revoked_at (the audit
        # trail) and drops this process's cached lookup at once.
        assert isinstance(obj, APIKey)
        revoking = obj.revoked and obj.revoked_at is None
        if revoking:
            obj.revoked = False
        if obj._state.adding:
            # The library would put the secret in a message: Django keeps messages in a cookie (signed,
            # not encrypted), or in the session table when they overflow it. `response_add` shows it.
            request._new_api_key_secret = APIKey.objects.assign_key(obj)  # type: ignore[attr-defined]
        obj.save()
        if revoking:
            api_key_revoke(api_key=obj)

    def response_add(self, request: HttpRequest, obj: Any, post_url_continue: str | None = None) -> HttpResponse:
        """The new key's secret, on this page only: never stored, never in a cookie, never cached."""
        secret = getattr(request, "_new_api_key_secret", None)
        if secret is None:
            return super().response_add(request, obj, post_url_continue)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"API key “{obj.name}” created",
            "api_key": obj,
            "secret": secret,
        }
        return TemplateResponse(request, "admin/apiservice/apikey/created.html", context)  # never_cache: admin

from django.contrib import admin
from django.http import HttpRequest
from django.urls import reverse_lazy

from .models import Invitation

# The admin's "View site" link goes to the portal: "/" has no page.
admin.site.site_url = reverse_lazy("portal:home")  # type: ignore[assignment]  # a lazy str


@admin.register(Invitation)
class InvitationAdmin(admin.ModelAdmin):
    list_display = ["email", "organisation", "role", "created_at", "accepted_at", "revoked_at"]
    list_select_related = ["organisation"]
    search_fields = ["email", "organisation__name"]
    readonly_fields = ["token_hash"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Only the team page makes invitations: it emails the link, whose token exists nowhere else. One
        # made here would have no token (an empty hash, unique: the second one was an IntegrityError).
        return False

"""Template context for every page: the portal's feature slots and the signed-in user's organisation."""

from typing import Any

from django.apps import apps
from django.http import HttpRequest
from django.urls import NoReverseMatch, reverse

# Pages other apps plug into the portal. An entry lights up in the navigation once its app is
# installed AND its URL name resolves, so merging a branch never breaks a page.
#   key: (app label, URL name)
FEATURE_SLOTS: dict[str, tuple[str, str]] = {
    "batch_jobs": ("batches", "portal-batches"),  # HOOK(batch jobs, issue 3)
    "edge_bundles": ("edge", "portal-bundles"),  # HOOK(edge bundles, issue 4)
    "billing": ("billing", "portal-billing"),  # HOOK(billing pages, issue 5)
    "staff_bundles": ("edge", "staff-bundles"),  # HOOK(bundle builds for staff, issue 4)
    "staff_billing_health": ("billing", "staff-billing-health"),  # HOOK(billing health, issue 5)
}


def _url(app_label: str, name: str) -> str | None:
    if not apps.is_installed(app_label):
        return None
    try:
        return reverse(name)
    except NoReverseMatch:
        return None


def features(request: HttpRequest) -> dict[str, Any]:
    return {"features": {key: _url(*slot) for key, slot in FEATURE_SLOTS.items()}}

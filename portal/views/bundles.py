"""Edge bundles in the portal (request, progress, signed download, public keys) and for staff (rebuild).

Requests, downloads and rebuilds go through the edge app's services; bundles are read through its
selectors, which show an organisation only public models' bundles and its own (others: 404).
"""

from django.contrib import messages
from django.db.models import Q
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from apiservice.errors import APIError, NotFound
from edge import keys as edge_keys
from edge import selectors as edge_selectors
from edge import services as edge_services
from edge.models import Bundle
from models_registry.models import ModelVersion

from ..access import portal_view, session_principal, staff_view, stale_row_response
from ..forms import BundleRequestForm
from .common import newest_first_page

SCOPES = frozenset({"bundles"})


def _org_id(request: HttpRequest) -> int:
    return int(request.membership.organisation_id)  # type: ignore[attr-defined]


def _bundle(request: HttpRequest, public_id: str) -> Bundle:
    try:
        return edge_selectors.bundle_get(public_id=public_id, organisation_id=_org_id(request))
    except NotFound:
        raise Http404("No such bundle.") from None


def _versions(organisation_id: int) -> object:
    visible = Q(model__organisation__isnull=True) | Q(model__organisation_id=organisation_id)
    return (
        ModelVersion.objects.filter(visible, status=ModelVersion.Status.READY)
        .select_related("model")
        .order_by("model__name", "-number")
    )


@require_http_methods(["GET", "POST"])
@portal_view()
def bundles(request: HttpRequest) -> HttpResponse:
    form = BundleRequestForm(request.POST or None, versions=_versions(_org_id(request)))
    status = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                bundle = edge_services.bundle_request(
                    version=form.cleaned_data["version"], variants=form.cleaned_data["variants"]
                )
            except APIError as exc:
                form.add_error(None, exc.message)
            else:
                messages.success(request, f"Bundle {bundle.public_id} is {bundle.get_status_display().lower()}.")
                return redirect("portal-bundles")
        status = 400
    page = newest_first_page(request, edge_selectors.bundle_list(organisation_id=_org_id(request)))
    context = {
        "form": form,
        "bundles": page.object_list,
        "page_obj": page,
        "keys": edge_keys.public_keys(),
        "keys_url": request.build_absolute_uri(reverse("edge:keys")),
    }
    return render(request, "portal/bundles.html", context, status=status)


@require_GET
@portal_view()
def bundle_row(request: HttpRequest, public_id: str) -> HttpResponse:
    """The htmx poll target: one bundle's row, which stops polling once it is ready or failed."""
    try:
        bundle = _bundle(request, public_id)
    except Http404:
        return stale_row_response(request)
    return render(request, "portal/partials/bundle_row.html", {"bundle": bundle})


@require_POST
@portal_view()
def bundle_download(request: HttpRequest, public_id: str) -> HttpResponse:
    """A fresh signed URL (edge's download service; one billed download) and a redirect to it."""
    bundle = _bundle(request, public_id)
    try:
        grant = edge_services.bundle_download_grant(bundle=bundle, principal=session_principal(request, scopes=SCOPES))
    except APIError as exc:
        messages.error(request, exc.message)
        return redirect("portal-bundles")
    path = reverse("edge:bundle-file", kwargs={"bundle_id": bundle.public_id})
    return redirect(f"{path}?token={grant.token}")


# --- Staff ----------------------------------------------------------------------------------------


@require_GET
@staff_view
def staff_bundles(request: HttpRequest) -> HttpResponse:
    builds = Bundle.objects.select_related("model_version__model__organisation").order_by("-id")
    status = request.GET.get("status", "")
    if status in Bundle.Status.values:
        builds = builds.filter(status=status)
    context = {"bundles": builds[:200], "status": status, "statuses": Bundle.Status.choices}
    return render(request, "staff/bundles.html", context)


@require_POST
@staff_view
def staff_bundle_rebuild(request: HttpRequest, public_id: str) -> HttpResponse:
    bundle = get_object_or_404(Bundle, public_id=public_id)
    if edge_services.bundle_rebuild(bundle=bundle):
        messages.success(request, f"Bundle {bundle.public_id} queued for a rebuild.")
    else:
        messages.error(request, f"Bundle {bundle.public_id} is {bundle.status}; only ready or failed ones rebuild.")
    next_url = request.POST.get("next", "")
    if next_url.startswith("/staff/"):
        return redirect(next_url)
    return redirect("staff-bundles")

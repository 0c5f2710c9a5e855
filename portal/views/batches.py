"""Batch jobs in the portal: upload a file and start a job, watch it (htmx polling), download, cancel.

Everything goes through the batches app's services and selectors, scoped to the session's
organisation: another organisation's batch or file is a 404.
"""

from django.contrib import messages
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from apiservice.errors import APIError, NotFound
from apiservice.models import Membership
from batches import selectors as batch_selectors
from batches import services as batch_services
from batches import storage
from batches.models import Batch, File

from .. import selectors
from ..access import portal_view, session_principal, stale_row_response
from ..forms import BatchCreateForm
from .common import newest_first_page

SCOPES = frozenset({"batch"})


def _org_id(request: HttpRequest) -> int:
    return int(request.membership.organisation_id)  # type: ignore[attr-defined]


def _batch(request: HttpRequest, uid: str) -> Batch:
    try:
        return batch_selectors.batch_get(organisation_id=_org_id(request), uid=uid)
    except NotFound:
        raise Http404("No such batch.") from None


def _form(request: HttpRequest) -> BatchCreateForm:
    # The catalogue's rule: a model without a ready version (or another organisation's) is no choice.
    models = selectors.model_catalogue(organisation_id=_org_id(request)).order_by("name")
    return BatchCreateForm(request.POST or None, request.FILES or None, models=models)


def _page(request: HttpRequest, form: BatchCreateForm, status: int = 200) -> HttpResponse:
    page = newest_first_page(request, batch_selectors.batch_list(organisation_id=_org_id(request)))
    context = {
        "form": form,
        "batches": page.object_list,
        "page_obj": page,
        "webhook_secret": _webhook_secret_for_owner(request),
    }
    response = render(request, "portal/batches.html", context, status=status)
    if context["webhook_secret"]:
        response["Cache-Control"] = "no-store"  # the page holds a secret (as the keys page)
    return response


def _webhook_secret_for_owner(request: HttpRequest) -> str | None:
    """Only owners see the secret that signs the organisation's batch webhooks."""
    membership = request.membership  # type: ignore[attr-defined]
    if membership.role != Membership.Role.OWNER:
        return None
    return str(membership.organisation.webhook_signing_secret)


@require_http_methods(["GET", "POST"])
@portal_view()
def batches(request: HttpRequest) -> HttpResponse:
    form = _form(request)
    if request.method == "POST":
        if not form.is_valid():
            return _page(request, form, status=400)
        data = form.cleaned_data
        try:
            record = batch_services.file_create(
                organisation_id=_org_id(request), upload=data["file"], purpose=File.Purpose.BATCH
            )
        except APIError as exc:
            form.add_error("file", exc.message)
            return _page(request, form, status=400)
        spec = batch_services.spec_from(
            {
                "input_file_id": record.uid,
                "model": data["model"].name,
                "version": data["version"].strip() or None,
                "output_format": data["output_format"],
            }
        )
        try:
            batch, _ = batch_services.batch_create(
                principal=session_principal(request, scopes=SCOPES), spec=spec, idempotency_key=None
            )
        except APIError as exc:
            batch_services.file_delete(organisation_id=_org_id(request), uid=record.uid)  # not kept without its job
            form.add_error(None, exc.message)
            return _page(request, form, status=400)
        messages.success(request, f"Batch {batch.uid} started on {record.filename}.")
        return redirect("portal-batches")
    return _page(request, form)


@require_GET
@portal_view()
def batch_row(request: HttpRequest, uid: str) -> HttpResponse:
    """The htmx poll target: one batch's row, which stops polling once the batch is finished."""
    try:
        batch = _batch(request, uid)
    except Http404:
        return stale_row_response(request)
    return render(request, "portal/partials/batch_row.html", {"batch": batch})


@require_POST
@portal_view()
def batch_cancel(request: HttpRequest, uid: str) -> HttpResponse:
    batch = _batch(request, uid)
    try:
        batch = batch_services.batch_cancel(organisation_id=_org_id(request), uid=batch.uid)
    except APIError as exc:
        if request.htmx:  # type: ignore[attr-defined]
            return render(request, "portal/partials/batch_row.html", {"batch": batch, "error": exc.message})
        messages.error(request, exc.message)
        return redirect("portal-batches")
    if request.htmx:  # type: ignore[attr-defined]
        return render(request, "portal/partials/batch_row.html", {"batch": batch})
    messages.success(request, f"Batch {batch.uid} is being cancelled.")
    return redirect("portal-batches")


@require_GET
@portal_view()
def batch_file(request: HttpRequest, uid: str) -> FileResponse:
    """One of the organisation's files (a batch's input, output or error file)."""
    try:
        record = batch_selectors.file_get(organisation_id=_org_id(request), uid=uid)
    except NotFound:
        raise Http404("No such file.") from None
    content_type = "text/csv" if record.format == File.Format.CSV else "application/jsonl"
    return FileResponse(
        storage.open_read(record.storage_name), content_type=content_type, as_attachment=True, filename=record.filename
    )

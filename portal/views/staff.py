"""Staff dashboards: usage across organisations, and the model catalogue (upload, aliases)."""

from typing import Any

from django.contrib import messages
from django.db.models import Count, Prefetch
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from apiservice.errors import APIError
from edge.models import Bundle
from models_registry.models import AliasMove, MLModel, ModelAlias, ModelVersion
from models_registry.services import alias_move, model_get_or_create, model_version_register

from .. import billing_link, selectors
from ..access import staff_view
from ..forms import AliasMoveForm, StaffUsageFilterForm, VersionUploadForm
from .common import csv_response, invalid_filter_response


def _usage_filter(request: HttpRequest) -> tuple[StaffUsageFilterForm, selectors.UsageFilter]:
    form = StaffUsageFilterForm(request.GET or None, models=MLModel.objects.order_by("name"))
    start, end = form.range()
    valid = form.is_bound and form.is_valid()
    organisation = form.cleaned_data.get("organisation") if valid else None
    model = form.cleaned_data.get("model") if valid else None
    flt = selectors.UsageFilter(
        start=start, end=end, organisation_id=getattr(organisation, "pk", None), model_id=getattr(model, "pk", None)
    )
    return form, flt


@require_GET
@staff_view
def usage(request: HttpRequest) -> HttpResponse:
    form, flt = _usage_filter(request)
    dashboard = selectors.usage_dashboard(flt=flt)
    revenues = billing_link.revenue_estimate(units_by_org_meter=dashboard["units_by_org_meter"])
    context = {
        "form": form,
        "flt": flt,
        "d": dashboard,
        "rollup_cursor": selectors.rollup_cursor(),
        "revenues": revenues,
    }
    return render(request, "staff/usage.html", context)


@require_GET
@staff_view
def usage_csv(request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
    form, flt = _usage_filter(request)
    if form.is_bound and not form.is_valid():
        return invalid_filter_response(form)
    return csv_response(selectors.usage_csv_rows(flt=flt), f"usage-all-{flt.start}-{flt.end}.csv")


@require_GET
@staff_view
def models(request: HttpRequest) -> HttpResponse:
    catalogue = (
        MLModel.objects.select_related("organisation")
        .annotate(version_count=Count("versions"))
        .prefetch_related(Prefetch("aliases", queryset=ModelAlias.objects.select_related("version")))
    )
    return render(request, "staff/models.html", {"models": catalogue, "form": VersionUploadForm()})


@require_POST
@staff_view
def version_upload(request: HttpRequest) -> HttpResponse:
    form = VersionUploadForm(request.POST, request.FILES)
    if form.is_valid():
        data = form.cleaned_data
        organisation = data["organisation"]
        # The owner is for new models only: left empty, an existing model (public or private) keeps its
        # owner; a chosen owner that is not the existing model's is still refused.
        existing = MLModel.objects.filter(name=data["model_name"]).first() if organisation is None else None
        try:
            model = existing or model_get_or_create(
                name=data["model_name"],
                organisation_id=organisation.pk if organisation else None,
                description=data["description"],
            )
            version = model_version_register(
                model=model, content=data["file"].read(), created_by=request.user, aliases=data["aliases"]
            )
        except APIError as exc:
            form.add_error(None, exc.message)
        else:
            if version.status == ModelVersion.Status.READY:
                messages.success(request, f"{version} is ready.")
            else:
                messages.error(request, f"{version} failed validation; see the report.")
            return redirect("staff:version", name=model.name, number=version.number)
    catalogue = MLModel.objects.select_related("organisation").annotate(version_count=Count("versions"))
    return render(request, "staff/models.html", {"models": catalogue, "form": form}, status=400)


def _model_context(model: MLModel, form: AliasMoveForm) -> dict[str, Any]:
    return {
        "model": model,
        "versions": model.versions.prefetch_related("aliases").order_by("-number"),
        "aliases": model.aliases.select_related("version"),
        "history": AliasMove.objects.filter(model=model).select_related("from_version", "to_version", "moved_by")[:50],
        "form": form,
        "bundles": Bundle.objects.filter(model_version__model=model).select_related("model_version")[:50],
    }


@require_GET
@staff_view
def model_detail(request: HttpRequest, name: str) -> HttpResponse:
    model = get_object_or_404(MLModel.objects.select_related("organisation"), name=name)
    alias = request.GET.get("alias", "")
    return render(
        request, "staff/model_detail.html", _model_context(model, AliasMoveForm(model=model, initial={"alias": alias}))
    )


@require_GET
@staff_view
def version_report(request: HttpRequest, name: str, number: int) -> HttpResponse:
    version = get_object_or_404(
        ModelVersion.objects.select_related("model", "created_by"), model__name=name, number=number
    )
    return render(request, "staff/version.html", {"version": version, "model": version.model})


@require_http_methods(["POST"])
@staff_view
def alias_move_view(request: HttpRequest, name: str) -> HttpResponse:
    """Two steps: the first POST shows what will change; the second (confirm=True) moves the alias."""
    model = get_object_or_404(MLModel, name=name)
    form = AliasMoveForm(request.POST, model=model)
    if not form.is_valid():
        return render(request, "staff/model_detail.html", _model_context(model, form), status=400)
    alias, version = form.cleaned_data["alias"], form.cleaned_data["version"]
    current = model.aliases.select_related("version").filter(name=alias).first()
    if not form.cleaned_data["confirm"]:
        context = {"model": model, "alias": alias, "version": version, "current": current, "form": form}
        return render(request, "staff/alias_confirm.html", context)
    try:
        alias_move(model=model, alias=alias, version=version, moved_by=request.user)
    except APIError as exc:
        form.add_error(None, exc.message)
        return render(request, "staff/model_detail.html", _model_context(model, form), status=400)
    messages.success(request, f"{model.name}@{alias} now points at version {version.number}.")
    return redirect("staff:model", name=model.name)

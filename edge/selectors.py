"""Reads of edge bundles, scoped to what an organisation may see (public models' and its own)."""

from django.db.models import Q, QuerySet

from apiservice.errors import NotFound
from models_registry.models import ModelVersion

from .models import Bundle


def bundle_list(*, organisation_id: int | None) -> QuerySet[Bundle]:
    visible = Q(model_version__model__organisation__isnull=True) | Q(
        model_version__model__organisation_id=organisation_id
    )
    return Bundle.objects.filter(visible).select_related("model_version__model")


def bundle_get(*, public_id: str, organisation_id: int | None) -> Bundle:
    bundle = bundle_list(organisation_id=organisation_id).filter(public_id=public_id).first()
    if bundle is None:  # another organisation's private bundle is indistinguishable from none
        raise NotFound(f"Bundle '{public_id}' not found.", code="bundle_not_found", param="id")
    return bundle


def bundle_list_for_version(*, version: ModelVersion) -> QuerySet[Bundle]:
    return Bundle.objects.filter(model_version=version).select_related("model_version__model")

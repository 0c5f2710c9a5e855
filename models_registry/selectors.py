"""Reads from the model registry, always scoped to what an organisation may see."""

import shutil
import uuid
from pathlib import Path

from django.conf import settings
from django.core.files.storage import default_storage
from django.db.models import Q, QuerySet

from apiservice.errors import NotFound

from .models import MLModel, ModelAlias, ModelVersion

DEFAULT_ALIAS = "production"


def model_list(*, organisation_id: int | None) -> QuerySet[MLModel]:
    """Public models plus the organisation's own private ones."""
    return MLModel.objects.filter(Q(organisation__isnull=True) | Q(organisation_id=organisation_id))


def model_get(*, name: str, organisation_id: int | None) -> MLModel:
    model = model_list(organisation_id=organisation_id).filter(name=name).first()
    if model is None:  # another organisation's private model is indistinguishable from none
        raise NotFound(f"Model '{name}' not found.", code="model_not_found", param="model")
    return model


def model_version_resolve(*, model: MLModel, ref: str | None, param: str = "version") -> ModelVersion:
    """A version by number, alias, `latest`, or (ref None) the `production` alias else latest.

    `param` is what the caller's client called `ref` (`version`, or `alias` for a `/labels/{alias}`
    path); a NotFound names it. An `alias` is only ever an alias, as TF-Serving's labels are: not a
    number, nor `latest` (names no alias can take).
    """
    if ref is None:
        alias = ModelAlias.objects.filter(model=model, name=DEFAULT_ALIAS).select_related("version").first()
        return alias.version if alias else _latest(model, param=param)
    if ref == "latest" and param != "alias":
        return _latest(model, param=param)
    if ref.isascii() and ref.isdigit() and param != "alias":  # not "²" (int() refuses it) nor other scripts' digits
        version = ModelVersion.objects.filter(model=model, number=int(ref)).first()
    else:
        alias = ModelAlias.objects.filter(model=model, name=ref).select_related("version").first()
        version = alias.version if alias else None
    if version is None:
        raise NotFound(f"Model '{model.name}' has no {param} '{ref}'.", code="version_not_found", param=param)
    return version


def _latest(model: MLModel, *, param: str) -> ModelVersion:
    version = model.versions.filter(status=ModelVersion.Status.READY).order_by("-number").first()
    if version is None:
        raise NotFound(f"Model '{model.name}' has no ready version.", code="version_not_found", param=param)
    return version


def model_version_local_path(*, version: ModelVersion) -> Path:
    """A local filesystem path to the version's ONNX file, copied out of remote storage if needed."""
    name = str(version.file.name)
    try:
        return Path(default_storage.path(name))
    except NotImplementedError:
        target = settings.MODEL_CACHE_DIR / f"{version.sha256}.onnx"
        if not target.exists():
            _cache_copy(name=name, target=target)
        return target


def _cache_copy(*, name: str, target: Path) -> None:
    """Copy the stored file `name` to `target` through a partial file of this call's own.

    Processes that first need the same version at the same time (a worker's pool, a batch's chunks)
    each copy to their own partial name and rename it into place: the file they rename is always theirs,
    and a reader never sees half a model.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.{uuid.uuid4().hex}.part")
    try:
        with default_storage.open(name, "rb") as src, open(partial, "wb") as dst:
            shutil.copyfileobj(src, dst)
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)


def aliases_of(*, version: ModelVersion) -> list[str]:
    return sorted(a.name for a in version.aliases.all())

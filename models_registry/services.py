"""Writes to the model registry: registering versions (with validation) and moving aliases."""

import hashlib
import logging
import tempfile
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.files.base import ContentFile
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from apiservice.errors import Conflict, InvalidInput, Unprocessable
from inference.sandbox import SandboxFailure, run_in_sandbox

from .models import RESERVED_ALIASES, AliasMove, MLModel, ModelAlias, ModelVersion
from .onnx_checks import ModelRejected, inspect

logger = logging.getLogger(__name__)
# Beyond the sandbox's time limit: the checker's pass over the file and storing it (S3) may take minutes.
VALIDATION_MARGIN = timedelta(minutes=30)


def model_get_or_create(*, name: str, organisation_id: int | None = None, description: str = "") -> MLModel:
    from .models import NAME_VALIDATOR

    try:
        NAME_VALIDATOR(name)
    except Exception:
        raise InvalidInput(f"'{name}' is not a valid model name.", param="name") from None
    model, created = MLModel.objects.get_or_create(
        name=name, defaults={"organisation_id": organisation_id, "description": description}
    )
    if not created and model.organisation_id != organisation_id:
        raise Unprocessable(f"A model named '{name}' already exists with another owner.", param="name")
    return model


def model_for_upload(*, name: str, organisation_id: int | None, description: str = "") -> MLModel:
    """The model a staff upload (API, `register_model`) adds a version to. The owner is for new models:
    named, it must be the existing model's owner (else 422); not named, an existing model, public or
    private, keeps its owner, and a new one is public."""
    if organisation_id is None:
        existing = MLModel.objects.filter(name=name).first()
        if existing is not None:
            return existing
    return model_get_or_create(name=name, organisation_id=organisation_id, description=description)


def model_version_register(
    *,
    model: MLModel,
    content: bytes,
    created_by: Any = None,
    aliases: list[str] | None = None,
) -> ModelVersion:
    """Store a new immutable version, validate it, and (if ready) point the given aliases at it.

    A version that fails validation is kept with status `failed` and a readable `failure_reason`.
    A bad alias name is refused (InvalidInput) before anything is stored.
    """
    for alias in aliases or []:
        alias_name_check(alias=alias)
    sha256 = hashlib.sha256(content).hexdigest()
    with transaction.atomic():
        MLModel.objects.select_for_update().get(pk=model.pk)  # serialises version numbering
        number = (model.versions.aggregate(n=Max("number"))["n"] or 0) + 1
        version = ModelVersion.objects.create(
            model=model,
            number=number,
            sha256=sha256,
            size_bytes=len(content),
            status=ModelVersion.Status.VALIDATING,
            created_by=created_by if getattr(created_by, "pk", None) else None,
        )
    model_version_validate(version=version, content=content)
    if version.status == ModelVersion.Status.READY:
        for alias in aliases or []:
            alias_move(model=model, alias=alias, version=version, moved_by=created_by)
    return version


INTERRUPTED = (
    "Validation was interrupted: the process validating this version stopped before it finished (a restart "
    "or a crash). Upload the model again."
)


def model_versions_interrupted_fail(*, now: datetime | None = None) -> int:
    """Fail the versions still `validating` long after any validation would have ended (its process was
    restarted or killed mid-way): listed as failed with a reason rather than validating forever.
    Returns how many."""
    now = now or timezone.now()
    bound = timedelta(seconds=settings.MODEL_VALIDATION_TIMEOUT_SECONDS) + VALIDATION_MARGIN
    return ModelVersion.objects.filter(status=ModelVersion.Status.VALIDATING, created_at__lt=now - bound).update(
        status=ModelVersion.Status.FAILED, failure_reason=INTERRUPTED
    )


def model_version_validate(*, version: ModelVersion, content: bytes) -> None:
    sandbox_path = ""
    try:
        inspection = inspect(
            content,
            max_bytes=settings.MODEL_MAX_BYTES,
            allowed_extra_domains=settings.MODEL_ALLOWED_EXTRA_DOMAINS,
        )
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.onnx"
            sandbox_path = str(path)
            path.write_bytes(inspection.content)
            run_in_sandbox(
                path,
                inspection.signature,
                timeout_s=settings.MODEL_VALIDATION_TIMEOUT_SECONDS,
                memory_bytes=settings.MODEL_VALIDATION_MEMORY_BYTES,
            )
    except (ModelRejected, SandboxFailure) as exc:
        version.status = ModelVersion.Status.FAILED
        reason = str(exc)
        version.failure_reason = reason.replace(sandbox_path, "model.onnx") if sandbox_path else reason  # no host paths
        if len(content) <= settings.MODEL_MAX_BYTES:
            version.file.save("model.onnx", ContentFile(content), save=False)
        version.save()
        logger.info("model version %s failed validation: %s", version, exc)
        return
    version.file.save("model.onnx", ContentFile(inspection.content), save=False)
    version.sha256 = hashlib.sha256(inspection.content).hexdigest()
    version.size_bytes = len(inspection.content)
    version.opset = inspection.opset
    version.producer = inspection.producer
    version.signature = inspection.signature
    version.labels = inspection.labels
    version.status = ModelVersion.Status.READY
    version.failure_reason = ""
    version.save()


def alias_name_check(*, alias: str) -> None:
    """An alias is a slug starting with a letter and not a reserved name; InvalidInput otherwise."""
    from .models import ALIAS_VALIDATOR

    try:
        ALIAS_VALIDATOR(alias)
    except Exception:
        raise InvalidInput(f"'{alias}' is not a valid alias (a slug starting with a letter).", param="alias") from None
    if alias in RESERVED_ALIASES:
        raise InvalidInput(f"'{alias}' is reserved.", param="alias")


def alias_delete(*, alias: ModelAlias, deleted_by: Any = None) -> None:
    """Remove `alias`, recording it as a last move (to no version); its history stays."""
    user = deleted_by if getattr(deleted_by, "pk", None) else None
    with transaction.atomic():
        current = ModelAlias.objects.select_for_update().filter(pk=alias.pk).first()
        if current is None:
            return
        AliasMove.objects.create(
            model_id=current.model_id,
            alias_name=current.name,
            alias=current,
            from_version_id=current.version_id,
            to_version=None,
            moved_by=user,
        )
        current.delete()


def alias_move(*, model: MLModel, alias: str, version: ModelVersion, moved_by: Any = None) -> ModelAlias:
    """Point `alias` at `version` (a ready version of the same model) and record the move."""
    alias_name_check(alias=alias)
    if version.model_id != model.pk:
        raise InvalidInput("That version belongs to another model.", param="version")
    if not version.is_servable:
        raise Conflict(
            f"Version {version.number} is not ready ({version.status}).", code="version_not_ready", param="version"
        )
    user = moved_by if getattr(moved_by, "pk", None) else None
    with transaction.atomic():
        current = ModelAlias.objects.select_for_update().filter(model=model, name=alias).first()
        if current is None:
            current = ModelAlias.objects.create(model=model, name=alias, version=version)
            AliasMove.objects.create(
                model=model, alias_name=alias, alias=current, from_version=None, to_version=version, moved_by=user
            )
        elif current.version_id != version.pk:
            AliasMove.objects.create(
                model=model,
                alias_name=alias,
                alias=current,
                from_version_id=current.version_id,
                to_version=version,
                moved_by=user,
            )
            current.version = version
            current.updated_at = timezone.now()
            current.save(update_fields=["version", "updated_at"])
        else:
            return current
        if settings.EDGE_BUILD_ON_ALIAS_MOVE:
            from edge.services import bundle_request_for_alias_move

            transaction.on_commit(lambda: bundle_request_for_alias_move(version_id=version.pk))
    return current

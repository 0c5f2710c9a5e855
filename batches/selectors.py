"""Reads for files and batches, always scoped to the calling organisation (others' ids are 404)."""

from typing import Any

from django.db.models import QuerySet
from django.utils import timezone

from apiservice.errors import NotFound

from .models import Batch, File


def file_list(*, organisation_id: int) -> QuerySet[File]:
    return File.objects.filter(organisation_id=organisation_id)


def file_get(*, organisation_id: int, uid: str, param: str | None = None) -> File:
    record = file_list(organisation_id=organisation_id).filter(uid=uid).first()
    if record is None:
        raise NotFound(f"No file '{uid}'.", code="file_not_found", param=param)
    return record


def batch_list(*, organisation_id: int) -> QuerySet[Batch]:
    return Batch.objects.filter(organisation_id=organisation_id).select_related(
        "input_file", "output_file", "error_file", "model_version__model"
    )


def batch_get(*, organisation_id: int, uid: str) -> Batch:
    batch = batch_list(organisation_id=organisation_id).filter(uid=uid).first()
    if batch is None:
        raise NotFound(f"No batch '{uid}'.", code="batch_not_found")
    return batch


def batch_eta_seconds(*, batch: Batch) -> float | None:
    """Remaining time at the rate seen so far (rows done since the batch went in progress); None once
    it has expired (it shows `in_progress` until finalised, but runs no more chunks)."""
    if batch.status != Batch.Status.IN_PROGRESS or batch.expired_at or not batch.in_progress_at or not batch.rows_done:
        return None
    elapsed = (timezone.now() - batch.in_progress_at).total_seconds()
    return round(elapsed * max(batch.rows_total - batch.rows_done, 0) / batch.rows_done, 1)


def _ts(value: Any) -> int | None:
    return int(value.timestamp()) if value else None


def batch_data(*, batch: Batch) -> dict[str, Any]:
    """The public batch object (API responses and webhook payloads)."""
    version = batch.model_version
    return {
        "id": batch.uid,
        "object": "batch",
        "input_file_id": batch.input_file.uid if batch.input_file else None,
        "model": version.model.name,
        "model_version": str(version.number),
        "completion_window": batch.completion_window,
        "output_format": batch.output_format,
        "status": batch.status,
        "output_file_id": batch.output_file.uid if batch.output_file else None,
        "error_file_id": batch.error_file.uid if batch.error_file else None,
        "errors": {"object": "list", "data": batch.errors} if batch.errors else None,
        "request_counts": {"total": batch.total, "completed": batch.completed, "failed": batch.failed},
        "progress": {
            "rows_total": batch.rows_total,
            "rows_done": batch.rows_done,
            "chunks_total": batch.chunks_total,
            "chunks_done": batch.chunks_done,
            "eta_seconds": batch_eta_seconds(batch=batch),
        },
        "metadata": batch.metadata,
        "webhook_url": batch.webhook_url or None,
        "created_at": _ts(batch.created_at),
        "in_progress_at": _ts(batch.in_progress_at),
        "expires_at": _ts(batch.expires_at),
        "finalizing_at": _ts(batch.finalizing_at),
        "completed_at": _ts(batch.completed_at),
        # Set when the batch stops, but the status follows only once finalisation wrote its files:
        # until then the object says `validating`/`in_progress` throughout.
        "failed_at": _ts(batch.failed_at) if batch.status == Batch.Status.FAILED else None,
        "expired_at": _ts(batch.expired_at) if batch.status == Batch.Status.EXPIRED else None,
        "cancelling_at": _ts(batch.cancelling_at),
        "cancelled_at": _ts(batch.cancelled_at),
    }


def file_data(*, record: File) -> dict[str, Any]:
    return {
        "id": record.uid,
        "object": "file",
        "bytes": record.bytes,
        "created_at": _ts(record.created_at),
        "filename": record.filename,
        "purpose": record.purpose,
        "format": record.format,
    }

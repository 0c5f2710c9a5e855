"""Writes to the usage ledger."""

from django.utils import timezone

from apiservice.auth import Principal

from .models import UsageRecord


def usage_record(
    *,
    request_id: str,
    principal: Principal,
    face: str,
    status_code: int,
    latency_ms: float,
    units: int = 0,
    meter: str = "",
    model_version_id: int | None = None,
    client_request_id: str | None = None,
) -> None:
    """Record one call. Runs in autocommit, so the row is durable when this returns."""
    UsageRecord.objects.create(
        request_id=request_id,
        client_request_id=client_request_id or "",
        organisation_id=principal.organisation_id,
        api_key_id=principal.api_key_id,
        face=face,
        meter=meter if units else "",
        model_version_id=model_version_id,
        units=units,
        status_code=status_code,
        latency_ms=round(latency_ms, 3),
        created_at=timezone.now(),
    )


def usage_record_once(
    *,
    request_id: str,
    organisation_id: int,
    api_key_id: str | None,
    face: str,
    meter: str,
    units: int,
    status_code: int,
    model_version_id: int | None = None,
    latency_ms: float = 0.0,
) -> bool:
    """A ledger row not tied to one HTTP request (e.g. a download spanning several ranged requests).

    Written at most once per `request_id` (the ledger's unique key): returns True when this call wrote
    it, False when it already existed, so retries bill nothing more.
    """
    _, created = UsageRecord.objects.get_or_create(
        request_id=request_id,
        defaults={
            "organisation_id": organisation_id,
            "api_key_id": api_key_id,
            "face": face,
            "meter": meter if units else "",
            "model_version_id": model_version_id,
            "units": units,
            "status_code": status_code,
            "latency_ms": round(latency_ms, 3),
            "created_at": timezone.now(),
        },
    )
    return created


def usage_record_batch_chunk(
    *,
    batch_id: str,
    chunk_index: int,
    organisation_id: int,
    api_key_id: str | None,
    model_version_id: int,
    units: int,
) -> bool:
    """Bill one finished batch chunk (units = its succeeded rows); True if this call wrote the row.

    The request id is derived from the batch and chunk, so a chunk run again never bills twice.
    """
    from .models import Meter

    _, created = UsageRecord.objects.get_or_create(
        request_id=f"batch_{batch_id}_chunk_{chunk_index}",
        defaults={
            "organisation_id": organisation_id,
            "api_key_id": api_key_id,
            "face": "batch",
            "meter": Meter.BATCH_ROWS if units else "",
            "model_version_id": model_version_id,
            "units": units,
            "status_code": 200,
            "created_at": timezone.now(),
        },
    )
    return created

"""Writes for files and batches: upload, delete, create (idempotent), cancel.

The work itself (validation, chunks, finalisation) is in `execution.py`; webhooks in `webhooks.py`.
"""

import hashlib
import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
from django.conf import settings
from django.core.exceptions import SuspiciousFileOperation
from django.core.files.uploadedfile import UploadedFile
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.text import get_valid_filename

from apiservice.auth import Principal
from apiservice.errors import Conflict, InvalidInput, PayloadTooLarge
from billing import limits
from billing.gateway import payment_required, quota_exceeded
from billing.idempotency import idempotency_key_take, key_reused
from billing.models import Meter
from models_registry.models import ModelVersion
from models_registry.selectors import model_get, model_version_resolve

from . import storage
from .execution import chunks_skip_pending
from .formats import UTF8_BOM, FileError, csv_output_columns
from .models import Batch, File
from .selectors import batch_get, file_get
from .webhooks import webhook_url_check

WINDOW = re.compile(r"^(\d{1,7})([smhd])$")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


# --- Files ----------------------------------------------------------------------------------------


JSONL_EXTENSIONS, CSV_EXTENSIONS, SNIFFED_EXTENSIONS = (".jsonl", ".ndjson", ".json"), (".csv",), ("", ".txt")
ARCHIVE_MAGIC = (b"\x1f\x8b", b"PK\x03\x04", b"PK\x05\x06")  # gzip, zip (also .xlsx), empty zip


def _file_format(name: str, head: bytes, content: bytes) -> str:
    """JSONL or CSV from the extension; `.txt` or none: sniffed (content starting with `{` is JSONL).
    `head`: the file's first bytes; `content`: its first bytes past leading whitespace."""
    extension = Path(name.lower()).suffix
    if head.startswith(ARCHIVE_MAGIC) or extension not in (*JSONL_EXTENSIONS, *CSV_EXTENSIONS, *SNIFFED_EXTENSIONS):
        accepted = ", ".join((*JSONL_EXTENSIONS, *CSV_EXTENSIONS, ".txt"))
        raise InvalidInput(
            f"Upload an uncompressed JSONL or CSV file ({accepted}, or no extension).",
            code="unsupported_file_type",
            param="file",
        )
    if content[:1] == b"[":  # JSON, but no line of it is a request: the whole batch would fail
        raise _not_as_named("holds a JSON array; JSONL is one JSON object per line, not an array")
    if extension in JSONL_EXTENSIONS:
        return File.Format.JSONL
    if extension in CSV_EXTENSIONS:
        if content[:1] == b"{":  # its "header" would fail the batch (unknown_column) after validation
            raise _not_as_named("starts with a JSON object: name a JSONL file .jsonl")
        return File.Format.CSV
    return File.Format.JSONL if content[:1] == b"{" else File.Format.CSV


def _not_as_named(what: str) -> InvalidInput:
    """A file whose content is plainly not the format its extension names: said now, not by a failed batch."""
    return InvalidInput(f"The file is not what its name says: it {what}.", code="unsupported_file_type", param="file")


def _first_content(upload: UploadedFile, head: bytes) -> bytes:
    """The upload's first bytes past leading whitespace (blank lines are not requests, however many
    open the file), or b"" when it holds nothing else. Reads on only while it finds whitespace."""
    content = head.lstrip()
    while not content:
        block = upload.read(1024 * 1024)
        if not block:
            return b""
        content = block.lstrip()
    return content


def file_create(*, organisation_id: int, upload: UploadedFile, purpose: str) -> File:
    """Store an uploaded input file (streamed from Django's upload handler to storage)."""
    if purpose != File.Purpose.BATCH:
        raise InvalidInput("purpose must be 'batch'.", param="purpose")
    size = upload.size or 0
    if size > settings.FILE_MAX_BYTES:
        raise PayloadTooLarge(
            f"The file ({size} bytes) is over the {settings.FILE_MAX_BYTES}-byte limit.", param="file"
        )
    upload.seek(0)
    head = upload.read(4096).removeprefix(UTF8_BOM)
    content = _first_content(upload, head)
    if size == 0 or not content:
        raise InvalidInput("The file is empty.", code="empty_file", param="file")
    upload.seek(0)
    filename = _upload_filename(upload.name or "input")
    record = File(
        organisation_id=organisation_id,
        purpose=purpose,
        filename=filename,
        format=_file_format(filename, head, content),
        bytes=size,
    )
    leaf = _stored_leaf(filename)
    record.storage_name = storage.store_upload(f"files/{organisation_id}/{record.uid}/{leaf}", upload)
    record.save()
    return record


STORED_NAME_BYTES = 200  # file systems allow 255 bytes per name; storage may add a suffix to it


def _upload_filename(name: str) -> str:
    """The upload's name under Django's rules for file names, or `input` when nothing is left of it."""
    try:
        return get_valid_filename(name) or "input"
    except SuspiciousFileOperation:  # a name of symbols only ("$$$") leaves nothing
        return "input"


def _stored_leaf(filename: str) -> str:
    """The name the file is stored under: `filename` cut to STORED_NAME_BYTES in UTF-8, extension kept.
    Django keeps names to 255 characters, but 100 CJK characters are already 300 bytes."""
    if len(filename.encode()) <= STORED_NAME_BYTES:
        return filename
    extension = Path(filename).suffix[:16]
    stem = filename.removesuffix(Path(filename).suffix)
    room = STORED_NAME_BYTES - len(extension.encode())
    return stem.encode()[:room].decode("utf-8", "ignore") + extension


def file_delete(*, organisation_id: int, uid: str) -> None:
    record = file_get(organisation_id=organisation_id, uid=uid)
    if Batch.objects.filter(input_file=record, status__in=[*Batch.ACTIVE, Batch.Status.CANCELLING]).exists():
        raise Conflict("A running batch reads this file; cancel it first.", code="file_in_use")
    storage.delete_quietly([record.storage_name])
    record.delete()


# --- Batches --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchSpec:
    input_file_id: str
    model: str
    ref: str | None
    output_format: str
    completion_window: str
    metadata: dict[str, str] | None
    webhook_url: str
    ref_param: str = "version"  # the field `ref` came in (`version` or `alias`), which an error names

    def digest(self) -> str:
        """The request's fingerprint for Idempotency-Key replays. `ref_param` is left out: `version`
        and `alias` naming the same ref ask for the same batch, and digests stored before the field
        existed still match."""
        fields = {name: value for name, value in self.__dict__.items() if name != "ref_param"}
        return hashlib.sha256(orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)).hexdigest()


def completion_window_seconds(window: str) -> int:
    match = WINDOW.match(window)
    if not match:
        raise InvalidInput("completion_window looks like '24h' (a number and s, m, h or d).", param="completion_window")
    seconds = int(match.group(1)) * UNITS[match.group(2)]
    low, high = settings.BATCH_MIN_COMPLETION_WINDOW_SECONDS, settings.BATCH_MAX_COMPLETION_WINDOW_SECONDS
    if not low <= seconds <= high:
        raise InvalidInput(f"completion_window must be between {low} s and {high} s.", param="completion_window")
    return seconds


def batch_create(*, principal: Principal, spec: BatchSpec, idempotency_key: str | None) -> tuple[Batch, bool]:
    """Create a batch and queue its validation; (batch, created). The same Idempotency-Key and body
    give back the first batch; the same key with another body is 422. An account whose standing
    blocks billable work is refused (402) first, replay included, as online calls are."""
    _standing_check(organisation_id=principal.organisation_id)
    digest = spec.digest()
    if idempotency_key:
        existing = _idempotent_replay(principal.organisation_id, idempotency_key, digest)
        if existing is not None:
            return existing, False
    _quota_check(principal=principal)
    batch = _batch_build(principal=principal, spec=spec)
    batch.idempotency_key, batch.request_hash = idempotency_key or None, digest
    try:
        with transaction.atomic():
            batch.save()
            if idempotency_key:  # one key space per organisation: an online call's key is not a batch's
                idempotency_key_take(organisation_id=principal.organisation_id, key=idempotency_key, fingerprint=digest)
            from .tasks import batch_validate

            batch_id = batch.pk
            # robust: with the broker down the batch is still created (201, not a 500 for a batch that
            # exists); batches_sweep queues its validation once the broker is back.
            transaction.on_commit(lambda: batch_validate.delay(batch_id), robust=True)
    except IntegrityError:  # a concurrent request with the same key won the insert
        if not idempotency_key:
            raise
        existing = _idempotent_replay(principal.organisation_id, idempotency_key, digest)
        if existing is None:
            raise
        return existing, False
    return batch, True


def _standing_check(*, organisation_id: int) -> None:
    """Refuse a batch (402) for an account that is cancelled or past due beyond the grace period, as
    online calls and bundle downloads are; each chunk is checked again before it runs
    (`execution._chunk_reserve`). With METERING_ENABLED off nothing is refused, as for them."""
    if not settings.METERING_ENABLED:
        return
    blocked = limits.entitlement_get(organisation_id=organisation_id).blocked
    if blocked:
        raise payment_required(blocked)


def _quota_check(*, principal: Principal) -> None:
    """Refuse a batch (429) when not one more row fits in the month's `batch_rows` quota or the key's
    budget; each chunk is checked again before it runs (`execution._chunk_reserve`). With
    METERING_ENABLED off nothing is checked, as on the rest of the request path."""
    if not settings.METERING_ENABLED:
        return
    try:
        reservation = limits.quota_reserve(
            organisation_id=principal.organisation_id,
            api_key_id=principal.api_key_id,
            meter=Meter.BATCH_ROWS,
            units=1,
            entitlement=limits.entitlement_get(organisation_id=principal.organisation_id),
        )
    except limits.QuotaRefused as refused:
        raise quota_exceeded(refused) from None
    limits.quota_settle(reservation=reservation, units=0)  # a probe: nothing is held for the batch


def _idempotent_replay(organisation_id: int, key: str, digest: str) -> Batch | None:
    existing = Batch.objects.filter(organisation_id=organisation_id, idempotency_key=key).first()
    if existing is not None and existing.request_hash != digest:
        raise key_reused()
    return existing


def _batch_build(*, principal: Principal, spec: BatchSpec) -> Batch:
    seconds = completion_window_seconds(spec.completion_window)
    input_file = file_get(organisation_id=principal.organisation_id, uid=spec.input_file_id, param="input_file_id")
    if input_file.purpose != File.Purpose.BATCH:
        raise InvalidInput("input_file_id must name a file uploaded with purpose 'batch'.", param="input_file_id")
    version = _version(principal.organisation_id, spec.model, spec.ref, param=spec.ref_param)
    if spec.output_format == File.Format.CSV:
        if input_file.format != File.Format.CSV:
            raise InvalidInput("CSV output needs a CSV input file.", param="output_format")
        try:
            csv_output_columns(version.signature)
        except FileError as exc:
            raise InvalidInput(exc.message, code=exc.code, param="output_format") from None
    if spec.webhook_url:
        webhook_url_check(url=spec.webhook_url)
    now = timezone.now()
    return Batch(
        organisation_id=principal.organisation_id,
        api_key_id=principal.api_key_id,
        input_file=input_file,
        model_version=version,
        output_format=spec.output_format,
        metadata=spec.metadata,
        completion_window=spec.completion_window,
        webhook_url=spec.webhook_url,
        created_at=now,
        expires_at=now + timedelta(seconds=seconds),
    )


def _version(organisation_id: int, model_name: str, ref: str | None, *, param: str) -> ModelVersion:
    """Resolved once, here: an alias moving later does not change a running batch. `param` is the
    field the client named the ref in (`version` or `alias`); a 404 or 409 names it."""
    model = model_get(name=model_name, organisation_id=organisation_id)
    version = model_version_resolve(model=model, ref=ref, param=param)
    if not version.is_servable:
        raise Conflict(
            f"Version {version.number} of '{model.name}' is not servable ({version.status}).",
            code="version_not_ready",
            param=param,
        )
    return version


def batch_cancel(*, organisation_id: int, uid: str) -> Batch:
    """Stop a batch: chunks not started are skipped, running ones finish; partial output is kept."""
    batch = batch_get(organisation_id=organisation_id, uid=uid)
    if batch.status in (Batch.Status.CANCELLING, Batch.Status.CANCELLED):
        return batch
    with transaction.atomic():
        cancelled = Batch.objects.filter(
            pk=batch.pk,
            status__in=[Batch.Status.VALIDATING, Batch.Status.IN_PROGRESS],
            failed_at__isnull=True,
            expired_at__isnull=True,
        ).update(status=Batch.Status.CANCELLING, cancelling_at=timezone.now())
        if not cancelled:
            batch.refresh_from_db(fields=["status", "failed_at", "expired_at"])
            state = "failing" if batch.failed_at else "expiring" if batch.expired_at else batch.status
            raise Conflict(f"A batch that is {state} cannot be cancelled.", code="batch_not_cancellable")
        # Whatever the status was (`batch` may be stale: validation can have queued the chunks since):
        # skip what has not started, and finalise now when nothing is running, a validating batch too.
        chunks_skip_pending(batch_id=batch.pk)
    return batch_get(organisation_id=organisation_id, uid=uid)


def spec_from(data: dict[str, Any]) -> BatchSpec:
    """The spec of a batch request: `version` or `alias` become one `ref`, remembering which it was."""
    if data.get("version") and data.get("alias"):
        raise InvalidInput("Give either version or alias, not both.", param="alias")
    ref_param = "alias" if data.get("alias") else "version"
    ref = data.get(ref_param)
    return BatchSpec(
        input_file_id=data["input_file_id"],
        model=data["model"],
        ref=str(ref) if ref else None,
        ref_param=ref_param,
        output_format=data.get("output_format") or File.Format.JSONL,
        completion_window=data.get("completion_window") or "24h",
        metadata=data.get("metadata"),
        webhook_url=data.get("webhook_url") or "",
    )

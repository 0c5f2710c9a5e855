"""Running a batch: start it after validation (validation.py), run its chunks, finalise the output.

Exactly-once effect under failure: a chunk is claimed with a conditional UPDATE (a fresh claim token
per attempt), its result files carry that token in their names, and only the attempt whose token is
still on the row when it finishes may mark it succeeded, add its counts and bill it (the billing row is
unique per batch+chunk). The batch is finished when no chunk row is pending or running: a count in
the database, not a chord.
"""

import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import IO, Any

import numpy as np
from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from billing.gateway import payment_required_message
from billing.limits import QuotaRefused, Reservation, entitlement_get, quota_reserve, quota_settle
from billing.models import Meter
from billing.services import usage_record_batch_chunk
from inference.services import Servable, predict, servable_from_version

from . import storage, tensors
from .formats import (
    LineError,
    Parser,
    RawLine,
    Request,
    csv_header,
    csv_output_columns,
    csv_row,
    error_line,
    iter_lines,
    line_custom_id,
    output_lines,
    parser_for,
)
from .models import Batch, BatchChunk, BatchPart, File

logger = logging.getLogger(__name__)


class ChunkRetry(Exception):
    """A transient failure: the chunk was released and should be queued again after `countdown`."""

    def __init__(self, countdown: float) -> None:
        super().__init__(f"retry in {countdown} s")
        self.countdown = countdown


def batch_parser(batch: Batch) -> Parser:
    assert batch.input_file is not None
    return parser_for(
        batch.input_file.format,
        batch.model_version.signature,
        max_rows=settings.INFERENCE_MAX_ROWS,
        nan_policy=settings.INFERENCE_NAN_POLICY,
    )


def is_blank(data: bytes) -> bool:
    return not data or data.isspace()  # isspace: the same ASCII whitespace as strip(), without a copy


def parsed_requests(parser: Parser, lines: Iterator[RawLine]) -> Iterator[Request | tuple[RawLine, LineError]]:
    """Parsed requests, or (line, error) for bad ones; blank lines are not requests."""
    for line in lines:
        if is_blank(line.data):
            continue
        try:
            yield parser.parse(line)
        except LineError as exc:
            yield line, exc


# --- Starting and failing (after validation, see validation.py) ------------------------------


def storable_errors(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Errors as PostgreSQL's jsonb can hold them. A NUL is valid in a JSON string, so in a custom_id or a
    CSV column name, but jsonb cannot hold one: writing it failed the whole batch. This copy drops it;
    the error file keeps the line's own custom_id."""
    return [{k: v.replace("\x00", "") if isinstance(v, str) else v for k, v in e.items()} for e in errors]


def start_chunks(
    *,
    batch: Batch,
    chunks: list[BatchChunk],
    lines: int,
    invalid: int,
    rows: int,
    errors: list[dict[str, Any]],
    rejected_name: str,
) -> None:
    """Validation passed: create the chunks and queue them (or finalise at once if it was stopped)."""
    with transaction.atomic():
        # Conditional on `validating`: of two validations of one batch (a redelivered message), one wins.
        started = Batch.objects.filter(pk=batch.pk, status=Batch.Status.VALIDATING, expired_at__isnull=True).update(
            status=Batch.Status.IN_PROGRESS,
            in_progress_at=timezone.now(),
            total=lines,
            failed=invalid,
            rows_total=rows,
            chunks_total=len(chunks),
            errors=storable_errors(errors),
            validation_errors_name=rejected_name,
        )
        if not started:
            stopped = (
                Batch.objects.filter(pk=batch.pk, finalized_at__isnull=True, failed_at__isnull=True)
                .filter(Q(status=Batch.Status.CANCELLING) | Q(expired_at__isnull=False))
                .update(validation_errors_name=rejected_name, total=lines, failed=invalid)
            )
            if stopped:  # cancelled or expired while validating
                finalize_queue(batch.pk)
            else:  # it ended otherwise meanwhile (finalised, failed): nothing names the merged error file
                transaction.on_commit(lambda: storage.delete_quietly([rejected_name]))
            return
        BatchChunk.objects.bulk_create(chunks)
        chunk_ids = list(BatchChunk.objects.filter(batch=batch).order_by("index").values_list("pk", flat=True))
        transaction.on_commit(lambda: _queue_chunks(chunk_ids))
        if not chunk_ids:
            finalize_queue(batch.pk)


def chunks_requeue_unstarted(*, batch: Batch) -> None:
    """Queue again the batch's chunks that no worker has claimed yet (after a crash while queueing)."""
    chunk_ids = list(
        BatchChunk.objects.filter(batch=batch, status=BatchChunk.Status.PENDING, started_at__isnull=True)
        .order_by("index")
        .values_list("pk", flat=True)
    )
    transaction.on_commit(lambda: _queue_chunks(chunk_ids))


def _queue_chunks(chunk_ids: list[int]) -> None:
    from .tasks import batch_chunk_run

    for chunk_id in chunk_ids:
        batch_chunk_run.delay(chunk_id)


def finalize_queue(batch_id: int) -> None:
    from .tasks import batch_finalize

    transaction.on_commit(lambda: batch_finalize.delay(batch_id))


def batch_fail(
    *, batch: Batch, errors: list[dict[str, Any]], rejected_name: str = "", total: int = 0, invalid: int = 0
) -> bool:
    """Validation failed (or crashed): the batch fails, with the first errors and the bad lines' file.

    False if the batch had already failed or was no longer validating (nothing changed).
    """
    with transaction.atomic():
        # The status turns `failed` when finalisation has written the error file.
        failed = Batch.objects.filter(pk=batch.pk, status=Batch.Status.VALIDATING, failed_at__isnull=True).update(
            failed_at=timezone.now(),
            errors=storable_errors(errors[: settings.BATCH_MAX_REPORTED_ERRORS]),
            validation_errors_name=rejected_name,
            total=total,
            failed=invalid,
        )
        if failed:
            finalize_queue(batch.pk)
    return bool(failed)


# --- Expiry ---------------------------------------------------------------------------------------


def batch_expire_if_due(*, batch: Batch) -> bool:
    """Expire a batch past its completion window: pending chunks are skipped, running ones finish.

    `expired_at` stops the work at once; the status turns `expired` when finalisation has written the
    partial output, so a client never sees a terminal status without its files.
    """
    if batch.expired_at is not None:
        return True
    if batch.status not in (Batch.Status.VALIDATING, Batch.Status.IN_PROGRESS) or batch.expires_at > timezone.now():
        return False
    with transaction.atomic():
        expired = Batch.objects.filter(
            pk=batch.pk,
            status__in=[Batch.Status.VALIDATING, Batch.Status.IN_PROGRESS],
            expires_at__lte=timezone.now(),
            expired_at__isnull=True,
        ).update(expired_at=timezone.now())
        if expired:
            chunks_skip_pending(batch_id=batch.pk)
    return True


def chunks_skip_pending(*, batch_id: int) -> None:
    """Skip the chunks not yet started (cancel, expiry); finalise now if none is running."""
    skipped = BatchChunk.objects.filter(batch_id=batch_id, status=BatchChunk.Status.PENDING).update(
        status=BatchChunk.Status.SKIPPED, finished_at=timezone.now()
    )
    Batch.objects.filter(pk=batch_id).update(chunks_done=F("chunks_done") + skipped)
    if not BatchChunk.objects.filter(batch_id=batch_id, status=BatchChunk.Status.RUNNING).exists():
        finalize_queue(batch_id)


# --- Chunks ---------------------------------------------------------------------------------------


@dataclass
class _ChunkResult:
    succeeded_lines: int = 0
    failed_lines: int = 0
    succeeded_rows: int = 0


def work_claim(*, model: type[BatchChunk] | type[BatchPart], pk: int) -> str | None:
    """Claim a pending chunk or validation part (or a running one whose message was redelivered) with
    a conditional UPDATE: the fresh claim token, or None when it is already finished."""
    claim = uuid.uuid4().hex
    claimed = model.objects.filter(pk=pk, status__in=[model.Status.PENDING, model.Status.RUNNING]).update(
        status=model.Status.RUNNING, attempts=F("attempts") + 1, claim=claim, started_at=timezone.now()
    )
    return claim if claimed else None


def chunk_run(*, chunk_id: int) -> None:
    """Claim a chunk and run it; a no-op if it is already finished (a redelivered message)."""
    claim = work_claim(model=BatchChunk, pk=chunk_id)
    if claim is None:
        return
    chunk = (
        BatchChunk.objects.select_related("batch__input_file", "batch__model_version__model")
        .filter(pk=chunk_id)
        .first()
    )
    if chunk is None:
        return
    batch = chunk.batch
    if batch_expire_if_due(batch=batch) or batch.status != Batch.Status.IN_PROGRESS or batch.input_file is None:
        _chunk_finish(chunk, claim, BatchChunk.Status.SKIPPED, _ChunkResult(), "", "")
        return
    poison = chunk.attempts > settings.BATCH_CHUNK_MAX_ATTEMPTS
    try:
        _chunk_work(chunk, claim, poison=poison)
    except Exception:
        logger.exception("batch chunk failed", extra={"batch": batch.uid, "chunk": chunk.index})
        BatchChunk.objects.filter(pk=chunk.pk, claim=claim, status=BatchChunk.Status.RUNNING).update(
            status=BatchChunk.Status.PENDING
        )
        raise ChunkRetry(countdown=2.0**chunk.attempts) from None


def _chunk_work(chunk: BatchChunk, claim: str, *, poison: bool) -> None:
    """Run the chunk's lines (or fail them: poison, quota refused, account blocked), then record and bill it.

    Before the model runs, the chunk's rows are held on the organisation's monthly `batch_rows` quota
    (and its key's budget): a chunk that does not fit, or whose account's standing now blocks it, is
    not predicted, its lines fail with the refusal's code. The hold is settled to the rows billed (0
    when this attempt did not bill).
    """
    reservation: Reservation | None = None
    refused: QuotaRefused | None = None
    if not poison:
        try:
            reservation = _chunk_reserve(chunk)
        except QuotaRefused as exc:
            refused = exc
    billed = 0
    try:
        billed = _chunk_write(chunk, claim, poison=poison, refused=refused)
    finally:
        if reservation is not None:
            quota_settle(reservation=reservation, units=billed)


def _chunk_reserve(chunk: BatchChunk) -> Reservation:
    """The chunk's rows held on the quota and budget, or QuotaRefused: also, with code
    `payment_required`, when the account's standing now blocks billable work (cancelled, past due
    beyond the grace period), as online calls get 402. With METERING_ENABLED off nothing is held or
    refused (an empty reservation settles to nothing), as for online calls."""
    if not settings.METERING_ENABLED:
        return Reservation(units=0)
    batch = chunk.batch
    entitlement = entitlement_get(organisation_id=batch.organisation_id)
    if entitlement.blocked:
        raise QuotaRefused("payment_required", payment_required_message(entitlement.blocked))
    return quota_reserve(
        organisation_id=batch.organisation_id,
        api_key_id=batch.api_key_id,
        meter=Meter.BATCH_ROWS,
        units=chunk.rows,
        entitlement=entitlement,
    )


def _chunk_write(chunk: BatchChunk, claim: str, *, poison: bool, refused: QuotaRefused | None) -> int:
    """Write the chunk's output and error parts and finish it; the rows billed."""
    batch = chunk.batch
    prefix = storage.batch_prefix(organisation_id=batch.organisation_id, batch_uid=batch.uid)
    result = _ChunkResult()
    # The output goes straight into its stored file (local storage: no copy); errors, rare, via a spool.
    with storage.writing(f"{prefix}/parts/{chunk.index:06d}-{claim}.out") as out, storage.spool() as err:
        if poison:
            message = f"This chunk failed {chunk.attempts - 1} times; its lines were not run again."
            _chunk_fail_lines(chunk, err, result, code="chunk_failed", message=message)
        elif refused is not None:
            _chunk_fail_lines(chunk, err, result, code=refused.code, message=refused.message)
        else:
            _chunk_predict(chunk, out.file, err, result)
        err_name = storage.store(f"{prefix}/parts/{chunk.index:06d}-{claim}.err", err) if result.failed_lines else ""
    out_name = out.name
    if not result.succeeded_lines:
        storage.delete_quietly([out_name])
        out_name = ""
    status = BatchChunk.Status.FAILED if poison or refused else BatchChunk.Status.SUCCEEDED
    refusal = {"code": refused.code, "message": refused.message, "line": None} if refused else None
    # The chunk's ledger row says what became of it, as an API call's status does: refused as the API
    # refuses (402 payment_required, 429 over the quota or budget), given up after its retries (500).
    status_code = 500 if poison else 402 if refused and refused.code == "payment_required" else 429 if refused else 200
    billed = _chunk_finish(
        chunk, claim, status, result, out_name, err_name, batch_error=refusal, status_code=status_code
    )
    if billed is None:
        storage.delete_quietly([out_name, err_name])  # another attempt owns this chunk now
    return billed or 0


@dataclass
class _Lines:
    """Consecutive valid requests as columns, their rows stacked in `feeds` (when they stack)."""

    numbers: list[int]
    custom_ids: list[str]
    forms: list[str]
    rows: list[int]
    csv_values: list[list[str]]  # one per line for CSV input, else empty
    feeds: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def of(cls, requests: list[Request]) -> "_Lines":
        return cls(
            numbers=[r.number for r in requests],
            custom_ids=[r.custom_id for r in requests],
            forms=[r.form for r in requests],
            rows=[r.rows for r in requests],
            csv_values=[r.csv_values for r in requests if r.csv_values],
        )

    def requests(self) -> Iterator[Request]:
        """One Request per line (feeds are views into the stacked arrays): the rare per-line paths."""
        start = 0
        for index, rows in enumerate(self.rows):
            feeds = {name: value[start : start + rows] for name, value in self.feeds.items()}
            yield Request(
                number=self.numbers[index],
                custom_id=self.custom_ids[index],
                form=self.forms[index],
                feeds=feeds,
                rows=rows,
                csv_values=self.csv_values[index] if self.csv_values else [],
            )
            start += rows


def _chunk_requests(chunk: BatchChunk) -> Iterator[Request]:
    """The chunk's valid requests: from the tensors validation stored, else by parsing its lines."""
    if not chunk.tensors_name:
        yield from _chunk_lines(chunk, batch_parser(chunk.batch))
        return
    yield from _chunk_tensors(chunk).requests()


def _chunk_tensors(chunk: BatchChunk) -> _Lines:
    """The requests validation stored for the chunk, as columns (no per-line objects)."""
    meta, feeds = tensors.tensors_load(chunk.tensors_name)
    count = len(meta["custom_ids"])
    if meta["numbers"] is None:  # consecutive lines from the chunk's first (see `_ChunkCutter._flush`)
        numbers = list(range(chunk.first_line, chunk.first_line + count))
    else:
        shift = chunk.first_line - meta.get("first_line", chunk.first_line)  # numbered from the part's start
        numbers = [number + shift for number in meta["numbers"]] if shift else meta["numbers"]
    custom_ids = meta["custom_ids"]
    if None in custom_ids:  # CSV without a custom_id column: named by file line numbers, known now
        custom_ids = [line_custom_id(n) if c is None else c for n, c in zip(numbers, custom_ids, strict=True)]
    return _Lines(
        numbers=numbers,
        custom_ids=custom_ids,
        forms=meta["forms"] or ["instances"] * count,
        rows=[1] * count if meta["rows"] is None else meta["rows"],
        csv_values=meta["csv_values"],
        feeds=feeds,
    )


def _chunk_lines(chunk: BatchChunk, parser: Parser) -> Iterator[Request]:
    """The chunk's valid requests (bad lines were reported by validation and are skipped here)."""
    batch = chunk.batch
    assert batch.input_file is not None
    with storage.open_read(batch.input_file.storage_name) as stream:
        if parser.format == "csv":
            parser.header(next(line for line in iter_lines(stream) if not is_blank(line.data)))
        lines = iter_lines(stream, offset=chunk.byte_offset, length=chunk.byte_length, first_number=chunk.first_line)
        for item in parsed_requests(parser, lines):
            if isinstance(item, Request):
                yield item


def _chunk_fail_lines(chunk: BatchChunk, err: IO[bytes], result: _ChunkResult, *, code: str, message: str) -> None:
    """Fail every valid line of the chunk without running the model (poison chunk, quota refused,
    account blocked)."""
    for request in _chunk_requests(chunk):
        err.write(
            error_line(
                batch_uid=chunk.batch.uid,
                number=request.number,
                custom_id=request.custom_id,
                code=code,
                message=message,
            )
        )
        result.failed_lines += 1


def _chunk_predict(chunk: BatchChunk, out: IO[bytes], err: IO[bytes], result: _ChunkResult) -> None:
    batch = chunk.batch
    servable = servable_from_version(batch.model_version)
    writer = _Writer(batch, out, err, result)
    if chunk.tensors_name:
        lines = _chunk_tensors(chunk)
        for first, end, start, stop in _sub_batches(lines.rows, settings.BATCH_SUB_BATCH_ROWS):
            _run_stacked(servable, lines, first, end, start, stop, writer)
        return
    group: list[Request] = []
    rows = 0
    for request in _chunk_lines(chunk, batch_parser(batch)):
        group.append(request)
        rows += request.rows
        if rows >= settings.BATCH_SUB_BATCH_ROWS:
            _run_group(servable, group, writer)
            group, rows = [], 0
    if group:
        _run_group(servable, group, writer)


def _sub_batches(rows: list[int], size: int) -> Iterator[tuple[int, int, int, int]]:
    """(first line, end line, first row, end row) of each sub-batch: lines until it holds `size` rows."""
    first = start = count = 0
    for index, line_rows in enumerate(rows):
        count += line_rows
        if count >= size:
            yield first, index + 1, start, start + count
            first, start, count = index + 1, start + count, 0
    if first < len(rows):
        yield first, len(rows), start, start + count


class _Writer:
    def __init__(self, batch: Batch, out: IO[bytes], err: IO[bytes], result: _ChunkResult) -> None:
        self.batch, self.out, self.err, self.result = batch, out, err, result
        self.csv_columns = csv_output_columns(batch.model_version.signature) if batch.output_format == "csv" else None

    def successes(self, lines: _Lines, first: int, end: int, outputs: dict[str, np.ndarray]) -> None:
        """The output of lines[first:end], whose rows are stacked in `outputs`, in one write."""
        rows = lines.rows[first:end]
        if self.csv_columns is not None:
            data = self._csv(lines, first, end, outputs)
        else:
            forms = lines.forms[first:end]
            data = output_lines(
                batch_uid=self.batch.uid,
                numbers=lines.numbers[first:end],
                custom_ids=lines.custom_ids[first:end],
                rows=rows,
                forms=None if forms.count("instances") == len(forms) else forms,
                outputs=outputs,
            )
        self.out.write(data)
        self.result.succeeded_lines += end - first
        self.result.succeeded_rows += sum(rows)

    def _csv(self, lines: _Lines, first: int, end: int, outputs: dict[str, np.ndarray]) -> bytes:
        assert self.csv_columns is not None
        parts, start = [], 0
        for index in range(first, end):
            values, custom_id = lines.csv_values[index], lines.custom_ids[index]
            parts.append(
                csv_row(custom_id=custom_id, csv_values=values, outputs=outputs, row=start, columns=self.csv_columns)
            )
            start += lines.rows[index]
        return b"".join(parts)

    def failure(self, request: Request, code: str, message: str) -> None:
        self.err.write(
            error_line(
                batch_uid=self.batch.uid, number=request.number, custom_id=request.custom_id, code=code, message=message
            )
        )
        self.result.failed_lines += 1


def _run_stacked(
    servable: Servable, lines: _Lines, first: int, end: int, start: int, stop: int, writer: _Writer
) -> None:
    """One ORT call on contiguous views of the chunk's stacked feeds (no copy, no concatenate)."""
    try:
        outputs = predict(servable=servable, feeds={name: value[start:stop] for name, value in lines.feeds.items()})
    except Exception:
        group = _Lines(
            lines.numbers[first:end],
            lines.custom_ids[first:end],
            lines.forms[first:end],
            lines.rows[first:end],
            lines.csv_values[first:end],
            {name: value[start:stop] for name, value in lines.feeds.items()},
        )
        for request in group.requests():
            _run_group(servable, [request], writer)
        return
    writer.successes(lines, first, end, outputs)


def _run_group(servable: Servable, group: list[Request], writer: _Writer) -> None:
    """One vectorised ONNX Runtime call for the group; on failure, one call per line to isolate it."""
    try:
        feeds = {name: np.concatenate([r.feeds[name] for r in group]) for name in group[0].feeds}
        outputs = predict(servable=servable, feeds=feeds)
    except Exception as exc:
        if len(group) > 1:
            for request in group:
                _run_group(servable, [request], writer)
            return
        logger.warning("batch line failed in the model: %s", exc)
        writer.failure(group[0], "inference_error", "The model failed on this line.")
        return
    writer.successes(_Lines.of(group), 0, len(group), outputs)


def _chunk_finish(
    chunk: BatchChunk,
    claim: str,
    status: str,
    result: _ChunkResult,
    out_name: str,
    err_name: str,
    *,
    batch_error: dict[str, Any] | None = None,
    status_code: int = 200,
) -> int | None:
    """Mark the chunk done if this attempt still owns it; add its counts and bill it, all at once.

    The rows this call billed (0 when skipped, or when the chunk's ledger row already existed), or
    None when another attempt owns the chunk (nothing changed). `batch_error` is added once to the
    batch's `errors` (a quota or standing refusal).
    """
    batch = chunk.batch
    billed = 0
    with transaction.atomic():
        owned = BatchChunk.objects.filter(pk=chunk.pk, claim=claim, status=BatchChunk.Status.RUNNING).update(
            status=status,
            succeeded_lines=result.succeeded_lines,
            failed_lines=result.failed_lines,
            succeeded_rows=result.succeeded_rows,
            output_name=out_name,
            error_name=err_name,
            finished_at=timezone.now(),
        )
        if not owned:
            return None
        Batch.objects.filter(pk=batch.pk).update(
            completed=F("completed") + result.succeeded_lines,
            failed=F("failed") + result.failed_lines,
            rows_done=F("rows_done") + (chunk.rows if status != BatchChunk.Status.SKIPPED else 0),
            chunks_done=F("chunks_done") + 1,
        )
        if batch_error is not None:
            _batch_error_add(batch_id=batch.pk, error=batch_error)
        if status != BatchChunk.Status.SKIPPED:
            written = usage_record_batch_chunk(
                batch_id=batch.uid,
                chunk_index=chunk.index,
                organisation_id=batch.organisation_id,
                api_key_id=batch.api_key_id,
                model_version_id=batch.model_version_id,
                units=result.succeeded_rows,
                status_code=status_code,
            )
            billed = result.succeeded_rows if written else 0
    if not BatchChunk.objects.filter(
        batch_id=batch.pk, status__in=[BatchChunk.Status.PENDING, BatchChunk.Status.RUNNING]
    ).exists():
        from .tasks import batch_finalize

        batch_finalize.delay(batch.pk)
    return billed


def _batch_error_add(*, batch_id: int, error: dict[str, Any]) -> None:
    """Put a batch-level error first in the batch's `errors`, once per code (the row is locked)."""
    batch = Batch.objects.select_for_update().only("errors").get(pk=batch_id)
    if any(existing.get("code") == error["code"] and existing.get("line") is None for existing in batch.errors):
        return
    batch.errors = [error, *batch.errors]
    batch.save(update_fields=["errors"])


# --- Finalisation ---------------------------------------------------------------------------------


def _final_status(batch: Batch) -> tuple[str, str | None] | None:
    """The status finalisation ends in (and the timestamp it sets), or None if it is not time yet."""
    if batch.status == Batch.Status.CANCELLING:
        return Batch.Status.CANCELLED, "cancelled_at"
    if batch.failed_at:
        return Batch.Status.FAILED, None
    if batch.expired_at:
        return Batch.Status.EXPIRED, None
    if batch.status == Batch.Status.FINALIZING:
        return Batch.Status.COMPLETED, "completed_at"
    return None


def batch_finalize(*, batch_id: int) -> None:
    """Join the chunks' parts into the output and error files, set the final status, notify."""
    unfinished = BatchChunk.objects.filter(
        batch_id=batch_id, status__in=[BatchChunk.Status.PENDING, BatchChunk.Status.RUNNING]
    )
    if unfinished.exists():
        return
    Batch.objects.filter(pk=batch_id, status=Batch.Status.IN_PROGRESS).update(
        status=Batch.Status.FINALIZING, finalizing_at=timezone.now()
    )
    with transaction.atomic():
        batch = Batch.objects.select_for_update().select_related("model_version").filter(pk=batch_id).first()
        final = _final_status(batch) if batch is not None else None
        if batch is None or final is None or batch.finalized_at is not None:
            return
        chunks = list(BatchChunk.objects.filter(batch=batch).order_by("index").values_list("output_name", "error_name"))
        batch.output_file = _join(batch, "output", [o for o, _ in chunks if o], header=_output_header(batch))
        batch.error_file = _join(
            batch, "errors", [n for n in [batch.validation_errors_name, *(e for _, e in chunks)] if n]
        )
        status, stamp = final
        batch.status = status
        now = timezone.now()
        if stamp:
            setattr(batch, stamp, now)
        batch.finalized_at = now
        batch.save(
            update_fields=["output_file", "error_file", "status", "completed_at", "cancelled_at", "finalized_at"]
        )
        from .webhooks import webhook_queue

        webhook_queue(batch=batch, event=f"batch.{status}")
    prefix = storage.batch_prefix(organisation_id=batch.organisation_id, batch_uid=batch.uid)
    transaction.on_commit(lambda: storage.delete_folder(f"{prefix}/parts"))


def _output_header(batch: Batch) -> bytes | None:
    return csv_header(batch.model_version.signature) if batch.output_format == "csv" else None


def _join(batch: Batch, kind: str, names: list[str], header: bytes | None = None) -> File | None:
    if not names:
        return None
    extension = "csv" if header is not None else "jsonl"
    prefix = storage.batch_prefix(organisation_id=batch.organisation_id, batch_uid=batch.uid)
    stored, size = storage.store_joined(f"{prefix}/{kind}.{extension}", names, header=header or b"")
    return File.objects.create(
        organisation_id=batch.organisation_id,
        purpose=File.Purpose.BATCH_OUTPUT,
        filename=f"{batch.uid}_{kind}.{extension}",
        format=extension,
        bytes=size,
        storage_name=stored,
    )


# --- Sweep ----------------------------------------------------------------------------------------


def batches_sweep() -> None:
    """Periodic safety net: expire overdue batches, re-queue parts and chunks whose messages were lost."""
    now = timezone.now()
    for batch in Batch.objects.filter(
        status__in=[Batch.Status.VALIDATING, Batch.Status.IN_PROGRESS], expires_at__lte=now
    ):
        batch_expire_if_due(batch=batch)
    stale = now - timedelta(seconds=settings.BATCH_STALE_CHUNK_SECONDS)
    chunk_ids = list(
        BatchChunk.objects.filter(
            status__in=[BatchChunk.Status.PENDING, BatchChunk.Status.RUNNING],
            batch__status=Batch.Status.IN_PROGRESS,
            batch__in_progress_at__lte=stale,
        )
        .filter(started_at__isnull=True)
        .values_list("pk", flat=True)[:1000]
    ) + list(
        BatchChunk.objects.filter(status=BatchChunk.Status.RUNNING, started_at__lte=stale).values_list("pk", flat=True)[
            :1000
        ]
    )
    _queue_chunks(chunk_ids)
    from .validation import parts_requeue_stale

    parts_requeue_stale(stale=stale)
    unfinalised = Batch.objects.filter(finalized_at__isnull=True).filter(
        Q(status__in=[Batch.Status.FINALIZING, Batch.Status.CANCELLING])
        | Q(failed_at__isnull=False)
        | Q(expired_at__isnull=False)
    )
    for batch_id in unfinalised.values_list("pk", flat=True)[:100]:
        finalize_queue(batch_id)

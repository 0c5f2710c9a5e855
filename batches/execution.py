"""Running a batch: validate the input once, run its chunks, finalise the output.

Exactly-once effect under failure: a chunk is claimed with a conditional UPDATE (a fresh claim token
per attempt), its result files carry that token in their names, and only the attempt whose token is
still on the row when it finishes may mark it succeeded, add its counts and bill it (the billing row is
unique per batch+chunk). The batch is finished when no chunk row is pending or running: a count in
the database, not a chord.
"""

import hashlib
import logging
import uuid
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import IO, Any

import numpy as np
import orjson
from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from billing.services import usage_record_batch_chunk
from inference.services import Servable, predict, servable_from_version
from inference.tensors import predict_response

from . import storage
from .formats import (
    FileError,
    LineError,
    Parser,
    RawLine,
    Request,
    csv_header,
    csv_output_columns,
    csv_row,
    decode_check,
    error_line,
    iter_lines,
    output_line,
    parser_for,
)
from .models import Batch, BatchChunk, File

logger = logging.getLogger(__name__)


class ChunkRetry(Exception):
    """A transient failure: the chunk was released and should be queued again after `countdown`."""

    def __init__(self, countdown: float) -> None:
        super().__init__(f"retry in {countdown} s")
        self.countdown = countdown


def _parser(batch: Batch) -> Parser:
    assert batch.input_file is not None
    return parser_for(
        batch.input_file.format,
        batch.model_version.signature,
        max_rows=settings.INFERENCE_MAX_ROWS,
        nan_policy=settings.INFERENCE_NAN_POLICY,
    )


def _requests(batch: Batch, parser: Parser, lines: Iterator[RawLine]) -> Iterator[Request | tuple[RawLine, LineError]]:
    """Parsed requests, or (line, error) for bad ones; blank lines are not requests."""
    for line in lines:
        if not line.data.strip():
            continue
        try:
            decode_check(line)
            yield parser.parse(line)
        except LineError as exc:
            yield line, exc


# --- Validation -----------------------------------------------------------------------------------


@dataclass
class _Validation:
    lines: int = 0
    invalid: int = 0
    rows: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    chunks: list[BatchChunk] = field(default_factory=list)
    hashes: array = field(default_factory=lambda: array("q"))
    buffer: "_TensorBuffer | None" = None

    def report(self, code: str, message: str, line: int | None) -> None:
        if len(self.errors) < settings.BATCH_MAX_REPORTED_ERRORS:
            self.errors.append({"code": code, "message": message, "line": line})


@dataclass
class _TensorBuffer:
    """One chunk's parsed requests, kept until the chunk is cut and stored as tensors."""

    chunk: BatchChunk
    meta: dict[str, list[Any]] = field(
        default_factory=lambda: {"numbers": [], "custom_ids": [], "forms": [], "rows": [], "csv_values": []}
    )
    feeds: dict[str, list[np.ndarray]] = field(default_factory=dict)

    def add(self, request: Request) -> None:
        for key, value in (
            ("numbers", request.number),
            ("custom_ids", request.custom_id),
            ("forms", request.form),
            ("rows", request.rows),
            ("csv_values", request.csv_values),
        ):
            self.meta[key].append(value)
        for name, array_ in request.feeds.items():
            self.feeds.setdefault(name, []).append(array_)


def _custom_id_hash(custom_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(custom_id.encode(), digest_size=8).digest(), "little", signed=True)


def batch_validate(*, batch_id: int) -> None:
    """Stream the input once: check every line, cut chunks, then start them (or fail the batch)."""
    batch = Batch.objects.select_related("input_file", "model_version").filter(pk=batch_id).first()
    if batch is None or batch.status != Batch.Status.VALIDATING or batch.failed_at:
        return
    if batch_expire_if_due(batch=batch):
        return
    try:
        _validate(batch)
    except Exception:
        logger.exception("batch validation crashed", extra={"batch": batch.uid})
        error = {
            "code": "validation_error",
            "message": "The file could not be validated; it has been logged.",
            "line": None,
        }
        batch_fail(batch=batch, errors=[error])


def _validate(batch: Batch) -> None:
    if batch.input_file is None:
        batch_fail(
            batch=batch, errors=[{"code": "file_deleted", "message": "The input file was deleted.", "line": None}]
        )
        return
    state = _Validation()
    prefix = storage.batch_prefix(organisation_id=batch.organisation_id, batch_uid=batch.uid)
    with storage.spool() as rejected:
        try:
            _validate_lines(batch, state, rejected)
        except FileError as exc:
            batch_fail(batch=batch, errors=[{"code": exc.code, "message": exc.message, "line": exc.line}])
            return
        rejected_name = (
            storage.store(f"{prefix}/parts/validation-{uuid.uuid4().hex}.err", rejected) if state.invalid else ""
        )
    verdict = _verdict(batch, state)
    if verdict:
        batch_fail(batch=batch, errors=[*verdict, *state.errors], rejected_name=rejected_name, counts=state)
        return
    _start(batch, state, rejected_name)


def _validate_lines(batch: Batch, state: _Validation, rejected: IO[bytes]) -> None:
    assert batch.input_file is not None
    parser = _parser(batch)
    chunk_rows = settings.BATCH_CHUNK_ROWS
    current: BatchChunk | None = None
    with storage.open_read(batch.input_file.storage_name) as stream:
        lines = iter_lines(stream)
        if parser.format == "csv":
            header = next((line for line in lines if line.data.strip()), None)
            if header is None:
                raise FileError("empty_file", "The file has no lines.")
            try:
                decode_check(header)
            except LineError as exc:
                raise FileError(exc.code, exc.message, header.number) from None
            parser.header(header)
        for item in _requests(batch, parser, lines):
            state.lines += 1
            if isinstance(item, tuple):
                line, error = item
                state.invalid += 1
                state.report(error.code, error.message, line.number)
                rejected.write(
                    error_line(
                        batch_uid=batch.uid, number=line.number, custom_id=None, code=error.code, message=error.message
                    )
                )
                continue
            state.hashes.append(_custom_id_hash(item.custom_id))
            state.rows += item.rows
            if current is None or current.rows >= chunk_rows:
                _tensors_flush(batch, state)
                current = BatchChunk(
                    batch=batch,
                    index=len(state.chunks),
                    first_line=item.number,
                    byte_offset=item.offset,
                    byte_length=0,
                    lines=0,
                    rows=0,
                )
                state.chunks.append(current)
                state.buffer = _TensorBuffer(chunk=current)
            assert state.buffer is not None
            state.buffer.add(item)
            current.lines += 1
            current.rows += item.rows
        end = batch.input_file.bytes
    _tensors_flush(batch, state)
    for chunk, following in zip(state.chunks, [*state.chunks[1:], None][: len(state.chunks)], strict=True):
        chunk.byte_length = (following.byte_offset if following else end) - chunk.byte_offset


def _tensors_flush(batch: Batch, state: _Validation) -> None:
    """Store the parsed chunk as tensors (.npz), so running it needs no second parse of the text.

    Validation already paid for parsing every line; keeping its result makes the chunks pure model
    work. A chunk whose feeds do not stack (different trailing shapes, strings) re-parses its lines.
    """
    buffer, state.buffer = state.buffer, None
    if buffer is None:
        return
    try:
        arrays = {f"feed:{name}": np.concatenate(parts) for name, parts in buffer.feeds.items()}
    except ValueError:
        return
    if any(array_.dtype == object for array_ in arrays.values()):
        return
    arrays["meta"] = np.frombuffer(orjson.dumps(buffer.meta), dtype=np.uint8)
    prefix = storage.batch_prefix(organisation_id=batch.organisation_id, batch_uid=batch.uid)
    with storage.spool() as handle:
        np.savez(handle, **arrays)  # type: ignore[arg-type]
        buffer.chunk.tensors_name = storage.store(
            f"{prefix}/parts/{buffer.chunk.index:06d}-{uuid.uuid4().hex}.npz", handle
        )


def _verdict(batch: Batch, state: _Validation) -> list[dict[str, Any]]:
    if state.lines == 0:
        return [{"code": "empty_file", "message": "The file has no request lines.", "line": None}]
    if state.invalid and state.invalid / state.lines > settings.BATCH_MAX_ERROR_RATE:
        return [
            {
                "code": "too_many_invalid_lines",
                "message": f"{state.invalid} of {state.lines} lines are invalid "
                f"(the limit is {settings.BATCH_MAX_ERROR_RATE:.0%}).",
                "line": None,
            }
        ]
    return _duplicates(batch, state)


def _duplicates(batch: Batch, state: _Validation) -> list[dict[str, Any]]:
    """custom_id must be unique: 8 bytes per line in memory, then a second pass only when one repeats."""
    hashes = np.frombuffer(state.hashes, dtype=np.int64) if len(state.hashes) else np.empty(0, np.int64)
    values, counts = np.unique(hashes, return_counts=True)
    repeated = set(values[counts > 1].tolist())
    if not repeated:
        return []
    assert batch.input_file is not None
    parser = _parser(batch)
    seen: set[str] = set()
    errors: list[dict[str, Any]] = []
    with storage.open_read(batch.input_file.storage_name) as stream:
        lines = iter_lines(stream)
        if parser.format == "csv":
            parser.header(next(line for line in lines if line.data.strip()))
        for item in _requests(batch, parser, lines):
            if isinstance(item, Request) and _custom_id_hash(item.custom_id) in repeated:
                if item.custom_id in seen and len(errors) < settings.BATCH_MAX_REPORTED_ERRORS:
                    errors.append(
                        {
                            "code": "duplicate_custom_id",
                            "message": f"custom_id '{item.custom_id}' is used twice.",
                            "line": item.number,
                        }
                    )
                seen.add(item.custom_id)
    return errors


def _start(batch: Batch, state: _Validation, rejected_name: str) -> None:
    with transaction.atomic():
        # Conditional on `validating`: of two validations of one batch (a redelivered message), one wins.
        started = Batch.objects.filter(pk=batch.pk, status=Batch.Status.VALIDATING, expired_at__isnull=True).update(
            status=Batch.Status.IN_PROGRESS,
            in_progress_at=timezone.now(),
            total=state.lines,
            failed=state.invalid,
            rows_total=state.rows,
            chunks_total=len(state.chunks),
            errors=state.errors,
            validation_errors_name=rejected_name,
        )
        if not started:
            stopped = (
                Batch.objects.filter(pk=batch.pk, finalized_at__isnull=True, failed_at__isnull=True)
                .filter(Q(status=Batch.Status.CANCELLING) | Q(expired_at__isnull=False))
                .update(validation_errors_name=rejected_name, total=state.lines, failed=state.invalid)
            )
            if stopped:  # cancelled or expired while validating
                _queue_finalize(batch.pk)
            return
        BatchChunk.objects.bulk_create(state.chunks)
        chunk_ids = list(BatchChunk.objects.filter(batch=batch).order_by("index").values_list("pk", flat=True))
        transaction.on_commit(lambda: _queue_chunks(chunk_ids))
        if not chunk_ids:
            _queue_finalize(batch.pk)


def _queue_chunks(chunk_ids: list[int]) -> None:
    from .tasks import batch_chunk_run

    for chunk_id in chunk_ids:
        batch_chunk_run.delay(chunk_id)


def _queue_finalize(batch_id: int) -> None:
    from .tasks import batch_finalize

    transaction.on_commit(lambda: batch_finalize.delay(batch_id))


def batch_fail(
    *, batch: Batch, errors: list[dict[str, Any]], rejected_name: str = "", counts: _Validation | None = None
) -> None:
    with transaction.atomic():
        # The status turns `failed` when finalisation has written the error file.
        failed = Batch.objects.filter(pk=batch.pk, status=Batch.Status.VALIDATING, failed_at__isnull=True).update(
            failed_at=timezone.now(),
            errors=errors[: settings.BATCH_MAX_REPORTED_ERRORS],
            validation_errors_name=rejected_name,
            total=counts.lines if counts else 0,
            failed=counts.invalid if counts else 0,
        )
        if failed:
            _queue_finalize(batch.pk)


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
        _queue_finalize(batch_id)


# --- Chunks ---------------------------------------------------------------------------------------


@dataclass
class _ChunkResult:
    succeeded_lines: int = 0
    failed_lines: int = 0
    succeeded_rows: int = 0


def chunk_run(*, chunk_id: int) -> None:
    """Claim a chunk and run it; a no-op if it is already finished (a redelivered message)."""
    claim = uuid.uuid4().hex
    claimed = BatchChunk.objects.filter(
        pk=chunk_id, status__in=[BatchChunk.Status.PENDING, BatchChunk.Status.RUNNING]
    ).update(status=BatchChunk.Status.RUNNING, attempts=F("attempts") + 1, claim=claim, started_at=timezone.now())
    if not claimed:
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
    batch = chunk.batch
    prefix = storage.batch_prefix(organisation_id=batch.organisation_id, batch_uid=batch.uid)
    result = _ChunkResult()
    with storage.spool() as out, storage.spool() as err:
        if poison:
            _chunk_poison(chunk, err, result)
        else:
            _chunk_predict(chunk, out, err, result)
        out_name = storage.store(f"{prefix}/parts/{chunk.index:06d}-{claim}.out", out) if result.succeeded_lines else ""
        err_name = storage.store(f"{prefix}/parts/{chunk.index:06d}-{claim}.err", err) if result.failed_lines else ""
    status = BatchChunk.Status.FAILED if poison else BatchChunk.Status.SUCCEEDED
    if not _chunk_finish(chunk, claim, status, result, out_name, err_name):
        storage.delete_quietly([out_name, err_name])  # another attempt owns this chunk now


def _chunk_requests(chunk: BatchChunk) -> Iterator[Request]:
    """The chunk's valid requests: from the tensors validation stored, else by parsing its lines."""
    if not chunk.tensors_name:
        yield from _chunk_lines(chunk, _parser(chunk.batch))
        return
    with storage.open_read(chunk.tensors_name) as handle, np.load(handle, allow_pickle=False) as data:
        meta = orjson.loads(data["meta"].tobytes())
        feeds = {key.removeprefix("feed:"): data[key] for key in data.files if key.startswith("feed:")}
    start = 0
    for number, custom_id, form, rows, csv_values in zip(
        meta["numbers"], meta["custom_ids"], meta["forms"], meta["rows"], meta["csv_values"], strict=True
    ):
        sliced = {name: value[start : start + rows] for name, value in feeds.items()}
        yield Request(number=number, custom_id=custom_id, form=form, feeds=sliced, rows=rows, csv_values=csv_values)
        start += rows


def _chunk_lines(chunk: BatchChunk, parser: Parser) -> Iterator[Request]:
    """The chunk's valid requests (bad lines were reported by validation and are skipped here)."""
    batch = chunk.batch
    assert batch.input_file is not None
    with storage.open_read(batch.input_file.storage_name) as stream:
        if parser.format == "csv":
            parser.header(next(line for line in iter_lines(stream) if line.data.strip()))
        lines = iter_lines(stream, offset=chunk.byte_offset, length=chunk.byte_length, first_number=chunk.first_line)
        for item in _requests(batch, parser, lines):
            if isinstance(item, Request):
                yield item


def _chunk_poison(chunk: BatchChunk, err: IO[bytes], result: _ChunkResult) -> None:
    message = f"This chunk failed {chunk.attempts - 1} times; its lines were not run again."
    for request in _chunk_requests(chunk):
        err.write(
            error_line(
                batch_uid=chunk.batch.uid,
                number=request.number,
                custom_id=request.custom_id,
                code="chunk_failed",
                message=message,
            )
        )
        result.failed_lines += 1


def _chunk_predict(chunk: BatchChunk, out: IO[bytes], err: IO[bytes], result: _ChunkResult) -> None:
    batch = chunk.batch
    servable = servable_from_version(batch.model_version)
    writer = _Writer(batch, out, err, result)
    group: list[Request] = []
    rows = 0
    for request in _chunk_requests(chunk):
        group.append(request)
        rows += request.rows
        if rows >= settings.BATCH_SUB_BATCH_ROWS:
            _run_group(servable, group, writer)
            group, rows = [], 0
    if group:
        _run_group(servable, group, writer)


class _Writer:
    def __init__(self, batch: Batch, out: IO[bytes], err: IO[bytes], result: _ChunkResult) -> None:
        self.batch, self.out, self.err, self.result = batch, out, err, result
        self.csv_columns = csv_output_columns(batch.model_version.signature) if batch.output_format == "csv" else None

    def success(self, request: Request, response: Any, outputs: dict[str, np.ndarray], row: int) -> None:
        if self.csv_columns is not None:
            self.out.write(csv_row(request=request, outputs=outputs, row=row, columns=self.csv_columns))
        else:
            self.out.write(output_line(batch_uid=self.batch.uid, request=request, response=response))
        self.result.succeeded_lines += 1
        self.result.succeeded_rows += request.rows

    def failure(self, request: Request, code: str, message: str) -> None:
        self.err.write(
            error_line(
                batch_uid=self.batch.uid, number=request.number, custom_id=request.custom_id, code=code, message=message
            )
        )
        self.result.failed_lines += 1


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
    rows_form = predict_response(outputs, form="instances") if any(r.form == "instances" for r in group) else None
    start = 0
    for request in group:
        end = start + request.rows
        if request.form == "instances":
            assert rows_form is not None
            response = rows_form[start:end]
        else:
            response = predict_response({name: value[start:end] for name, value in outputs.items()}, form="inputs")
        writer.success(request, response, outputs, start)
        start = end


def _chunk_finish(
    chunk: BatchChunk, claim: str, status: str, result: _ChunkResult, out_name: str, err_name: str
) -> bool:
    """Mark the chunk done if this attempt still owns it; add its counts and bill it, all at once."""
    batch = chunk.batch
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
            return False
        Batch.objects.filter(pk=batch.pk).update(
            completed=F("completed") + result.succeeded_lines,
            failed=F("failed") + result.failed_lines,
            rows_done=F("rows_done") + (chunk.rows if status != BatchChunk.Status.SKIPPED else 0),
            chunks_done=F("chunks_done") + 1,
        )
        if status != BatchChunk.Status.SKIPPED:
            usage_record_batch_chunk(
                batch_id=batch.uid,
                chunk_index=chunk.index,
                organisation_id=batch.organisation_id,
                api_key_id=batch.api_key_id,
                model_version_id=batch.model_version_id,
                units=result.succeeded_rows,
            )
    if not BatchChunk.objects.filter(
        batch_id=batch.pk, status__in=[BatchChunk.Status.PENDING, BatchChunk.Status.RUNNING]
    ).exists():
        from .tasks import batch_finalize

        batch_finalize.delay(batch.pk)
    return True


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
    with storage.spool() as target:
        if header is not None:
            target.write(header)
        storage.append(target, names)
        size = target.tell()
        stored = storage.store(f"{prefix}/{kind}.{extension}", target)
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
    """Periodic safety net: expire overdue batches, re-queue chunks whose messages were lost."""
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
    unfinalised = Batch.objects.filter(finalized_at__isnull=True).filter(
        Q(status__in=[Batch.Status.FINALIZING, Batch.Status.CANCELLING])
        | Q(failed_at__isnull=False)
        | Q(expired_at__isnull=False)
    )
    for batch_id in unfinalised.values_list("pk", flat=True)[:100]:
        _queue_finalize(batch_id)

"""Validating a batch's input before any work starts, in parallel parts.

`batch_validate` cuts the file into byte ranges of about `BATCH_VALIDATION_PART_BYTES` at line starts
(a few bytes read at each cut; a CSV header is checked here) and queues one `batch_validate_part`
task per range. Each part streams its range once: it checks every line against the model signature,
counts and records the bad ones, and cuts its valid lines into chunks of `BATCH_CHUNK_ROWS` rows
whose parsed feeds and ids it stores as .npy arrays (tensors.py), so that chunks do model work
only. A part cannot know how many lines come before it, so it numbers its lines from its own start.
When no part is pending or running (a count in the database, not a chord), `batch_validate_finish`
turns those into file line numbers, decides (error rate, duplicate custom_ids) and starts the chunks
or fails the batch. No chunk runs before that decision.

Parts follow the chunks' exactly-once rules: claimed with a conditional UPDATE and a fresh claim token
(which their files carry in their names), and only the attempt still holding the token records its
result. A part that crashes fails the batch, as a crashed validation always did.
"""

import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from itertools import islice
from typing import IO, Any

import numpy as np
import orjson
from django.conf import settings
from django.db import transaction

from billing.limits import entitlement_get
from billing.models import Meter

from . import storage, tensors
from .execution import (
    batch_expire_if_due,
    batch_fail,
    batch_parser,
    chunks_requeue_unstarted,
    is_blank,
    parsed_requests,
    start_chunks,
    storable_errors,
    work_claim,
)
from .formats import (
    FileError,
    JSONLParser,
    LineError,
    Parser,
    RawLine,
    Request,
    decode_check,
    error_line,
    ids_from_line_numbers,
    iter_lines,
    line_custom_id,
)
from .models import Batch, BatchChunk, BatchPart

logger = logging.getLogger(__name__)

_CRASHED = {"code": "validation_error", "message": "The file could not be validated; it has been logged.", "line": None}


@dataclass
class Validation:
    """What validation found: counts, the first errors, the chunks cut, a hash per valid line."""

    lines: int = 0
    invalid: int = 0
    rows: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    chunks: list[BatchChunk] = field(default_factory=list)
    hashes: list[np.ndarray] = field(default_factory=list)  # int64, one per valid line

    def report(self, code: str, message: str, line: int | None, custom_id: str | None = None) -> None:
        if len(self.errors) < settings.BATCH_MAX_REPORTED_ERRORS:
            self.errors.append({"code": code, "message": message, "line": line, "custom_id": custom_id})


_HASH_BLOCK = 4096


def custom_id_hashes(custom_ids: list[str]) -> np.ndarray:
    """A 64-bit FNV-1a hash of each id's code points (int64), vectorised column by column.

    The same in every process (parts run in different ones, unlike `hash()`), and about 0.1 µs per id
    where one `blake2b` call per id costs 0.7 µs. Ids are padded to the longest of their block of
    4,096 (so memory stays small); the padding is masked out, so an id hashes the same in any block.
    """
    hashes = np.empty(len(custom_ids), dtype=np.uint64)
    prime = np.uint64(0x100000001B3)
    for start in range(0, len(custom_ids), _HASH_BLOCK):
        ids = custom_ids[start : start + _HASH_BLOCK]
        points = np.array(ids, dtype=str).view(np.uint32).reshape(len(ids), -1)
        lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        block = np.full(len(ids), 0xCBF29CE484222325, dtype=np.uint64)
        for index, column in enumerate(points.T):
            block = np.where(lengths > index, (block ^ column) * prime, block)
        hashes[start : start + len(ids)] = block
    return hashes.view(np.int64)


# --- Cutting the file into parts ------------------------------------------------------------------


def batch_validate(*, batch_id: int) -> None:
    """Cut the input into parts and queue their validation (or fail the batch: bad CSV header)."""
    batch = Batch.objects.select_related("input_file", "model_version").filter(pk=batch_id).first()
    if batch is None or batch.status != Batch.Status.VALIDATING or batch.failed_at:
        return
    if batch_expire_if_due(batch=batch):
        return
    if batch.input_file is None:
        batch_fail(
            batch=batch, errors=[{"code": "file_deleted", "message": "The input file was deleted.", "line": None}]
        )
        return
    if BatchPart.objects.filter(batch=batch).exists():
        return  # a redelivered message: the parts are cut and queued (the sweep re-queues lost ones)
    try:
        bounds = _part_bounds(batch)
    except FileError as exc:
        batch_fail(batch=batch, errors=[{"code": exc.code, "message": exc.message, "line": exc.line}])
        return
    except Exception:
        logger.exception("batch validation crashed", extra={"batch": batch.uid})
        batch_fail(batch=batch, errors=[_CRASHED])
        return
    with transaction.atomic():
        parts = BatchPart.objects.bulk_create(
            BatchPart(batch=batch, index=index, byte_offset=offset, byte_length=length)
            for index, (offset, length) in enumerate(bounds)
        )
        part_ids = [part.pk for part in parts]
        transaction.on_commit(lambda: parts_queue(part_ids))
        if not part_ids:
            _finish_queue(batch.pk)


def _part_bounds(batch: Batch) -> list[tuple[int, int]]:
    """(offset, length) of each part: about BATCH_VALIDATION_PART_BYTES each, cut at line starts."""
    assert batch.input_file is not None
    parser = batch_parser(batch)
    end, size = batch.input_file.bytes, settings.BATCH_VALIDATION_PART_BYTES
    with storage.open_read(batch.input_file.storage_name) as stream:
        offset = _csv_header(parser, stream)[0] if parser.format == "csv" else 0
        bounds = []
        while offset < end:
            cut = _line_start(stream, offset + size, end)
            bounds.append((offset, cut - offset))
            offset = cut
    return bounds


def _line_start(stream: IO[bytes], position: int, end: int) -> int:
    """The offset of the first line starting at or after `position` (or `end`)."""
    if position >= end:
        return end
    stream.seek(position - 1)
    while block := stream.read(64 * 1024):
        newline = block.find(b"\n")
        if newline >= 0:
            return min(position + newline, end)
        position += len(block)
    return end


def _csv_header(parser: Parser, stream: IO[bytes]) -> tuple[int, int]:
    """Read and check the CSV header (the first non-blank line): (offset after it, its line number)."""
    header = next((line for line in iter_lines(stream) if not is_blank(line.data)), None)
    if header is None:
        raise FileError("empty_file", "The file has no lines.")
    try:
        decode_check(header)
    except LineError as exc:
        raise FileError(exc.code, exc.message, header.number) from None
    parser.header(header)
    stream.seek(header.offset)
    stream.readline()
    return stream.tell(), header.number


def parts_queue(part_ids: list[int]) -> None:
    from .tasks import batch_validate_part

    for part_id in part_ids:
        batch_validate_part.delay(part_id)


def _finish_queue(batch_id: int) -> None:
    from .tasks import batch_validate_finish

    transaction.on_commit(lambda: batch_validate_finish.delay(batch_id))


# --- One part -------------------------------------------------------------------------------------


def part_validate(*, part_id: int) -> None:
    """Claim a part and validate its lines; a no-op if it is already done (a redelivered message)."""
    claim = work_claim(model=BatchPart, pk=part_id)
    if claim is None:
        return
    part = BatchPart.objects.select_related("batch__input_file", "batch__model_version").get(pk=part_id)
    batch = part.batch
    stopped = batch_expire_if_due(batch=batch) or batch.status != Batch.Status.VALIDATING or batch.failed_at
    if stopped or batch.input_file is None:
        _part_finish(part, claim, {})
        return
    if part.attempts > settings.BATCH_CHUNK_MAX_ATTEMPTS:  # it killed its worker every time
        batch_fail(batch=batch, errors=[_CRASHED])
        _part_finish(part, claim, {})
        return
    try:
        result = _part_run(batch, part, claim)
    except Exception:
        logger.exception("batch validation crashed", extra={"batch": batch.uid, "part": part.index})
        batch_fail(batch=batch, errors=[_CRASHED])
        result = {}
    _part_finish(part, claim, result)


def _part_finish(part: BatchPart, claim: str, result: dict[str, Any]) -> None:
    """Record the result if this attempt still owns the part; the last part to finish queues the merge."""
    done = BatchPart.objects.filter(pk=part.pk, claim=claim, status=BatchPart.Status.RUNNING).update(
        status=BatchPart.Status.DONE, result=result
    )
    # Another attempt owns the part now, or the batch ended while this part ran (failed, cancelled or
    # expired) and its finalisation has already emptied the parts folder: nothing will read the files.
    if not done or Batch.objects.filter(pk=part.batch_id, finalized_at__isnull=False).exists():
        storage.delete_quietly(_part_files(result))
        return
    unfinished = [BatchPart.Status.PENDING, BatchPart.Status.RUNNING]
    if not BatchPart.objects.filter(batch_id=part.batch_id, status__in=unfinished).exists():
        _finish_queue(part.batch_id)


def _part_files(result: dict[str, Any]) -> list[str]:
    """The stored files a part's result names."""
    names = [result.get("rejected_name", ""), result.get("hashes_name", "")]
    return [*names, *(chunk["tensors_name"] for chunk in result.get("chunks", []))]


def _part_run(batch: Batch, part: BatchPart, claim: str) -> dict[str, Any]:
    assert batch.input_file is not None
    state, parser = Validation(), batch_parser(batch)
    prefix = storage.batch_prefix(organisation_id=batch.organisation_id, batch_uid=batch.uid)
    name = f"{prefix}/parts/v{part.index:05d}-{claim}"
    with storage.spool() as rejected:
        with storage.open_read(batch.input_file.storage_name) as stream:
            if parser.format == "csv":
                _csv_header(parser, stream)
            cutter = _ChunkCutter(batch, state, parser, name=name)
            lines = iter_lines(stream, offset=part.byte_offset, length=part.byte_length)
            physical = _check_lines(state, parser, cutter, lines, rejected)
        cutter.close(end=part.byte_offset + part.byte_length)
        rejected_name = storage.store(f"{name}.err", rejected) if state.invalid else ""
    with storage.writing(f"{name}.hashes.npy") as hashes:
        np.save(hashes.file, np.concatenate(state.hashes) if state.hashes else np.empty(0, np.int64))
    hashes_name = hashes.name
    return {
        "lines": physical,
        "requests": state.lines,
        "invalid": state.invalid,
        "rows": state.rows,
        "errors": storable_errors(state.errors),
        "rejected_name": rejected_name,
        "hashes_name": hashes_name,
        "chunks": [
            {
                "first_line": chunk.first_line,
                "byte_offset": chunk.byte_offset,
                "byte_length": chunk.byte_length,
                "lines": chunk.lines,
                "rows": chunk.rows,
                "tensors_name": chunk.tensors_name,
            }
            for chunk in state.chunks
        ],
    }


def _check_lines(
    state: Validation, parser: Parser, cutter: "_ChunkCutter", lines: Iterator[RawLine], rejected: IO[bytes]
) -> int:
    """Check every line (the parser's fast path where it applies); the number of physical lines read.

    This runs once per line of the file: locals rather than attributes, no call it can avoid (adding
    a fast-path line to the cutter inline instead of in a method saves 0.13 s per million lines).
    """
    parse, add = parser.parse_rows, cutter.add
    number = requests = 0
    for line in lines:
        number, data = line.number, line.data
        if not data or data.isspace():  # blank lines are not requests (see `is_blank`)
            continue
        requests += 1
        try:
            parsed = parse(line)
        except LineError as error:
            state.invalid += 1
            state.report(error.code, error.message, number, error.custom_id)
            record = [number, error.code, error.message, error.custom_id]
            rejected.write(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))
            continue
        if isinstance(parsed, Request):
            add(line, parsed)
            continue
        # A fast-path line, added to the cutter here (one call less per line): its rows wait in
        # `pending` with its neighbours' to be stacked into one array.
        if cutter.rows >= cutter.limit:
            cutter._cut(line)
        custom_id, rows = parsed
        count = len(rows)
        cutter.lines.append((number, custom_id, count))
        cutter.rows += count
        pending = cutter.pending
        pending.extend(rows)
        if len(pending) >= _STACK_ROWS:
            cutter._stack()
    state.lines += requests
    return number


def chunk_rows_for(*, organisation_id: int) -> int:
    """Rows per chunk: `BATCH_CHUNK_ROWS`, or a tenth of a hard-capped plan's monthly `batch_rows`
    quota if smaller. A chunk holds all its rows on the quota before it runs, so a chunk larger than
    the quota itself could never run; in tenths, at most a tenth of the quota is left unused. With
    METERING_ENABLED off nothing is held, so nothing is cut."""
    if not settings.METERING_ENABLED:
        return int(settings.BATCH_CHUNK_ROWS)
    cap = entitlement_get(organisation_id=organisation_id).caps.get(Meter.BATCH_ROWS)
    if cap is None:
        return int(settings.BATCH_CHUNK_ROWS)
    return max(1, min(int(settings.BATCH_CHUNK_ROWS), cap // 10))


# Fast-path rows wait as Python lists until this many, then become one array (bounded memory).
_STACK_ROWS = 1024


class _ChunkCutter:
    """Cuts valid lines into chunks of about `BATCH_CHUNK_ROWS` rows and stores each one's tensors.

    This runs once per line of the file, so it does as little as it can per line: one tuple
    (number, custom_id, rows) per line, fast-path rows kept as Python lists and stacked into one
    array per `_STACK_ROWS`; the columns are unzipped once per chunk. `_check_lines` adds fast-path
    lines itself (the cut, the tuple, the pending rows); `add` takes the others.
    """

    def __init__(self, batch: Batch, state: Validation, parser: Parser, *, name: str) -> None:
        self.batch, self.state, self.name = batch, state, name
        self.fast = parser if isinstance(parser, JSONLParser) and parser.fast else None
        # Ids made from line numbers are unique, and the part's numbers are not the file's yet: the
        # chunk names those requests when it runs (None in the stored ids).
        self.numbered = ids_from_line_numbers(parser)
        self.chunk: BatchChunk | None = None
        self.limit = 0  # rows that close the current chunk (0: no chunk yet)
        self.chunk_rows = chunk_rows_for(organisation_id=batch.organisation_id)
        self.rows = 0
        self._columns()

    def _columns(self) -> None:
        self.lines: list[tuple[int, str | None, int]] = []  # (number, custom_id, rows) per line
        self.forms: dict[int, str] = {}  # index -> form, for the lines not using `instances`
        self.csv_values: list[list[str]] = []  # CSV input only
        self.feeds: dict[str, list[np.ndarray]] = {}
        self.pending: list[list[Any]] = []  # fast-path rows not yet stacked

    def add(self, line: RawLine, request: Request) -> None:
        if self.rows >= self.limit:
            self._cut(line)
        self._stack()
        if request.form != "instances":
            self.forms[len(self.lines)] = request.form
        self.lines.append((request.number, None if self.numbered else request.custom_id, request.rows))
        self.rows += request.rows
        if request.csv_values:
            self.csv_values.append(request.csv_values)
        for name, array_ in request.feeds.items():
            self.feeds.setdefault(name, []).append(array_)

    def _stack(self) -> None:
        if self.pending:
            assert self.fast is not None
            self.feeds.setdefault(self.fast.name, []).append(self.fast.rows_array(self.pending))
            self.pending = []

    def _cut(self, line: RawLine) -> None:
        self._flush()
        self.chunk = BatchChunk(
            batch=self.batch,
            index=len(self.state.chunks),
            first_line=line.number,
            byte_offset=line.offset,
            byte_length=0,
            lines=0,
            rows=0,
        )
        self.state.chunks.append(self.chunk)
        self.limit = self.chunk_rows

    def close(self, *, end: int) -> None:
        self._flush()
        chunks = self.state.chunks
        for chunk, following in zip(chunks, [*chunks[1:], None][: len(chunks)], strict=True):
            chunk.byte_length = (following.byte_offset if following else end) - chunk.byte_offset

    def _flush(self) -> None:
        chunk = self.chunk
        if chunk is None:
            return
        numbers, custom_ids, line_rows = (list(column) for column in zip(*self.lines, strict=True))
        chunk.lines, chunk.rows = len(numbers), self.rows
        self.state.rows += self.rows
        self.state.hashes.append(
            custom_id_hashes([c for c in custom_ids if c is not None] if self.numbered else custom_ids)
        )
        self._stack()
        forms: list[str] | None = None  # None: every line uses `instances` (the common case, stored small)
        if self.forms:
            forms = ["instances"] * len(numbers)
            for index, form in self.forms.items():
                forms[index] = form
        # The common case is stored small: numbers None when the lines follow each other (no blank or
        # bad line between them; numbers only increase), rows None when every line holds one row.
        consecutive = numbers[-1] - numbers[0] == len(numbers) - 1
        meta = {
            "first_line": chunk.first_line,  # the numbers are counted from the part's start, like this
            "numbers": None if consecutive else numbers,
            "custom_ids": custom_ids,
            "forms": forms,
            "rows": None if self.rows == len(numbers) else line_rows,
            "csv_values": self.csv_values,
        }
        chunk.tensors_name = tensors.tensors_store(f"{self.name}-{chunk.index:04d}.npy", self.feeds, meta)
        self.chunk, self.rows = None, 0
        self._columns()


# --- Merging the parts, deciding, starting --------------------------------------------------------


def batch_validate_finish(*, batch_id: int, redelivered: bool = False) -> None:
    """Once every part is done: file line numbers, counts, the verdict; then start the chunks or fail.

    `redelivered`: this message was restored after the worker running it died. If that run had
    started the batch, it may have died after the commit while queueing the chunks: the chunks not
    started yet are queued again (running one twice is safe; `chunk_run` claims it), rather than
    waiting for `batches_sweep` to find them stale.
    """
    batch = Batch.objects.select_related("input_file", "model_version").filter(pk=batch_id).first()
    if batch is None or batch.failed_at or batch.finalized_at or batch.input_file is None:
        return
    if redelivered and batch.status == Batch.Status.IN_PROGRESS:
        chunks_requeue_unstarted(batch=batch)
        return
    if batch.status not in (Batch.Status.VALIDATING, Batch.Status.CANCELLING) or batch.in_progress_at:
        return
    parts = list(BatchPart.objects.filter(batch=batch).order_by("index"))
    if any(part.status != BatchPart.Status.DONE for part in parts):
        return
    state = Validation()
    rejected_name = _merge(batch, parts, state)
    if batch.status == Batch.Status.VALIDATING and not batch_expire_if_due(batch=batch):
        verdict = _verdict(batch, state, parts)
        if verdict:
            counts = {"total": state.lines, "invalid": state.invalid}
            if not batch_fail(batch=batch, errors=[*verdict, *state.errors], rejected_name=rejected_name, **counts):
                storage.delete_quietly([rejected_name])  # it ended otherwise meanwhile: nothing names the file
            return
    start_chunks(
        batch=batch,
        chunks=state.chunks,
        lines=state.lines,
        invalid=state.invalid,
        rows=state.rows,
        errors=state.errors,
        rejected_name=rejected_name,
    )


def _merge(batch: Batch, parts: list[BatchPart], state: Validation) -> str:
    """Sum the parts' counts, renumber their errors and chunks from the file's start; the error file.

    A part the batch's stop made skip has no result; nothing after it can be numbered, so the merge
    ends there (the batch is cancelled or expired: no verdict, no chunks).
    """
    assert batch.input_file is not None
    base, numbered = _lines_before_parts(batch)
    prefix = storage.batch_prefix(organisation_id=batch.organisation_id, batch_uid=batch.uid)
    with storage.spool() as rejected:
        for part in parts:
            result = part.result
            if not result:
                break
            state.lines += result["requests"]
            state.invalid += result["invalid"]
            state.rows += result["rows"]
            for error in result["errors"]:
                line = error["line"] + base
                custom_id = error.get("custom_id") or (line_custom_id(line) if numbered else None)
                state.report(error["code"], error["message"], line, custom_id)
            if result["rejected_name"]:
                _rejected_renumber(batch, result["rejected_name"], base, rejected, numbered=numbered)
            for chunk in result["chunks"]:
                state.chunks.append(
                    BatchChunk(
                        batch=batch, index=len(state.chunks), **{**chunk, "first_line": chunk["first_line"] + base}
                    )
                )
            base += result["lines"]
        if not state.invalid:
            return ""
        return storage.store(f"{prefix}/parts/validation-{uuid.uuid4().hex}.err", rejected)


def _lines_before_parts(batch: Batch) -> tuple[int, bool]:
    """The physical lines before the first part (a CSV file's header and any blank lines above it),
    and whether requests are named by their line numbers (a CSV file without a custom_id column)."""
    assert batch.input_file is not None
    parser = batch_parser(batch)
    if parser.format != "csv":
        return 0, False
    with storage.open_read(batch.input_file.storage_name) as stream:
        return _csv_header(parser, stream)[1], ids_from_line_numbers(parser)


def _rejected_renumber(batch: Batch, name: str, base: int, target: IO[bytes], *, numbered: bool) -> None:
    with storage.open_read(name) as source:
        for line in source:
            number, code, message, *rest = orjson.loads(line)  # [number, code, message, custom_id]
            number += base
            custom_id = rest[0] if rest and rest[0] else (line_custom_id(number) if numbered else None)
            target.write(
                error_line(batch_uid=batch.uid, number=number, custom_id=custom_id, code=code, message=message)
            )


def _verdict(batch: Batch, state: Validation, parts: list[BatchPart]) -> list[dict[str, Any]]:
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
    return _duplicates(batch, [part.result["hashes_name"] for part in parts])


def _duplicates(batch: Batch, hash_names: list[str]) -> list[dict[str, Any]]:
    """custom_id must be unique: 8 bytes per line in memory, then a second pass only when one repeats."""
    arrays = []
    for name in hash_names:
        with storage.open_read(name) as handle:
            arrays.append(np.load(handle, allow_pickle=False))
    hashes = np.concatenate(arrays) if arrays else np.empty(0, np.int64)
    del arrays
    hashes.sort()  # in place: a repeated hash sits next to itself (np.unique would copy and count)
    repeated = set(hashes[1:][hashes[1:] == hashes[:-1]].tolist())
    if not repeated:
        return []
    assert batch.input_file is not None
    parser = batch_parser(batch)
    seen: set[str] = set()
    errors: list[dict[str, Any]] = []
    with storage.open_read(batch.input_file.storage_name) as stream:
        lines = iter_lines(stream)
        if parser.format == "csv":
            parser.header(next(line for line in lines if not is_blank(line.data)))
        requests = (item for item in parsed_requests(parser, lines) if isinstance(item, Request))
        while block := list(islice(requests, _HASH_BLOCK)):
            hashes = custom_id_hashes([request.custom_id for request in block]).tolist()
            for request, value in zip(block, hashes, strict=True):
                if value not in repeated:
                    continue
                if request.custom_id in seen and len(errors) < settings.BATCH_MAX_REPORTED_ERRORS:
                    errors.append(
                        {
                            "code": "duplicate_custom_id",
                            "message": f"custom_id '{request.custom_id}' is used twice.",
                            "line": request.number,
                            "custom_id": request.custom_id,
                        }
                    )
                seen.add(request.custom_id)
    return errors


# --- Safety net -----------------------------------------------------------------------------------


def parts_requeue_stale(*, stale: datetime) -> None:
    """Re-queue parts whose messages were lost; merge batches whose merge message was lost; cut the parts
    of batches whose first message was lost (queued while the broker was down)."""
    from .tasks import batch_validate

    uncut = Batch.objects.filter(
        status=Batch.Status.VALIDATING, failed_at__isnull=True, created_at__lte=stale, parts__isnull=True
    )
    for batch_id in uncut.values_list("pk", flat=True)[:100]:
        batch_validate.delay(batch_id)  # a no-op for a batch whose parts are cut meanwhile
    unfinished = [BatchPart.Status.PENDING, BatchPart.Status.RUNNING]
    part_ids = list(
        BatchPart.objects.filter(
            status__in=unfinished, batch__status=Batch.Status.VALIDATING, batch__created_at__lte=stale
        )
        .exclude(started_at__gt=stale)
        .values_list("pk", flat=True)[:1000]
    )
    parts_queue(part_ids)
    merged = (
        Batch.objects.filter(status=Batch.Status.VALIDATING, failed_at__isnull=True, created_at__lte=stale)
        .filter(parts__isnull=False)
        .exclude(parts__status__in=unfinished)
        .distinct()
    )
    for batch_id in merged.values_list("pk", flat=True)[:100]:
        _finish_queue(batch_id)

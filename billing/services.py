"""Writes to the usage ledger."""

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any

import psycopg
from django.conf import settings
from django.db import (
    DEFAULT_DB_ALIAS,
    IntegrityError,
    InterfaceError,
    OperationalError,
    ProgrammingError,
    connection,
    connections,
    transaction,
)
from django.utils import timezone

from apiservice.auth import Principal

from .coalesce import Coalescer, Pending
from .models import IdempotencyRecord, UsageRecord
from .prepared import execute_prepared

_LEDGER_FIELDS = (  # model field names, in the order of the values below
    "request_id",
    "client_request_id",
    "organisation",
    "api_key",
    "face",
    "meter",
    "model_version",
    "units",
    "status_code",
    "latency_ms",
    "created_at",
)


@cache
def _ledger_insert_sql(rows: int = 1) -> str:
    """The INSERT of `rows` ledger rows, built once per row count from the model's metadata."""
    meta = UsageRecord._meta
    quote = connection.ops.quote_name
    columns = ", ".join(quote(str(meta.get_field(name).column)) for name in _LEDGER_FIELDS)  # type: ignore[union-attr]
    row = "(" + ", ".join(["%s"] * len(_LEDGER_FIELDS)) + ")"
    # Only identifiers from the model's metadata are interpolated; every value is a parameter.
    return f"INSERT INTO {quote(meta.db_table)} ({columns}) VALUES {', '.join([row] * rows)}"  # noqa: S608


# The answer stored for an Idempotency-Key: `IdempotencyRecord` columns, in this order.
_ANSWER_FIELDS = ("key", "fingerprint", "status_code", "content_type", "body", "headers")
LOST = "idempotent-replay"  # the face of a call whose Idempotency-Key another execution recorded first


@dataclass(frozen=True)
class IdempotentAnswer:
    """The first answer to an Idempotency-Key, committed with the call's ledger row (one statement)."""

    key: str
    fingerprint: str
    status_code: int
    content_type: str
    body: bytes
    headers: dict[str, str]

    def values(self) -> tuple[Any, ...]:
        return (self.key, self.fingerprint, self.status_code, self.content_type, self.body, json.dumps(self.headers))


_NO_ANSWER = (None,) * len(_ANSWER_FIELDS)


def _answers_expired_before(now: datetime) -> datetime:
    """Stored answers older than this are past `IDEMPOTENCY_TTL_HOURS` and may be replaced."""
    return now - timedelta(hours=settings.IDEMPOTENCY_TTL_HOURS)


@cache
def _ledger_answer_insert_sql(rows: int = 1) -> str:
    """The ledger INSERT of `rows` rows that also stores their idempotent answers, in one statement.

    A data-modifying CTE inserts each answer into `IdempotencyRecord` (unique per organisation and key;
    an answer past the TTL is replaced), and the ledger rows whose answer lost (another execution of
    the key is recorded) get face `idempotent-replay` and no units. Rows without an answer are plain.
    RETURNING gives each row's request id and face, so the caller learns whether it won.
    """
    usage, idem = UsageRecord._meta, IdempotencyRecord._meta
    quote = connection.ops.quote_name

    def column(meta: Any, name: str) -> str:
        return quote(str(meta.get_field(name).column))

    def cast(meta: Any, name: str) -> str:
        field = meta.get_field(name)
        return "%s::" + str(field.target_field.db_type(connection) if field.is_relation else field.db_type(connection))

    ledger_columns = [column(usage, name) for name in _LEDGER_FIELDS]
    answer_columns = [f"a_{name}" for name in _ANSWER_FIELDS]
    row = "(" + ", ".join([cast(usage, n) for n in _LEDGER_FIELDS] + [cast(idem, n) for n in _ANSWER_FIELDS]) + ")"
    org, face, meter, units = (column(usage, n) for n in ("organisation", "face", "meter", "units"))
    lost = "(v.a_key IS NOT NULL AND won.key IS NULL)"
    picked = {
        face: f"CASE WHEN {lost} THEN '{LOST}' ELSE v.{face} END",
        meter: f"CASE WHEN {lost} THEN '' ELSE v.{meter} END",
        units: f"CASE WHEN {lost} THEN 0 ELSE v.{units} END",
    }
    target = quote(idem.db_table)
    stored = ", ".join(column(idem, n) for n in ("organisation", *_ANSWER_FIELDS, "done", "created_at"))
    replaced = [column(idem, n) for n in (*_ANSWER_FIELDS[1:], "done", "created_at")]
    updated = ", ".join(f"{c} = EXCLUDED.{c}" for c in replaced)
    # Only identifiers from the models' metadata are interpolated; every value is a parameter.
    return (
        f"WITH v ({', '.join(ledger_columns + answer_columns)}) AS (VALUES {', '.join([row] * rows)}), "  # noqa: S608
        f"won AS (INSERT INTO {target} ({stored}) "
        f"SELECT v.{org}, {', '.join('v.' + c for c in answer_columns)}, true, v.{column(usage, 'created_at')} "
        f"FROM v WHERE v.a_key IS NOT NULL "
        f"ON CONFLICT ({column(idem, 'organisation')}, {column(idem, 'key')}) DO UPDATE SET {updated} "
        f"WHERE {target}.{column(idem, 'created_at')} < %s "
        f"RETURNING {column(idem, 'organisation')} AS org, {column(idem, 'key')} AS key) "
        f"INSERT INTO {quote(usage.db_table)} ({', '.join(ledger_columns)}) "
        f"SELECT {', '.join(picked.get(c, 'v.' + c) for c in ledger_columns)} "
        f"FROM v LEFT JOIN won ON won.org = v.{org} AND won.key = v.a_key "
        f"RETURNING {column(usage, 'request_id')}, {face}"
    )


@dataclass(kw_only=True, eq=False)
class _LedgerRow(Pending):
    request_id: str
    values: tuple[Any, ...]
    answer: IdempotentAnswer | None = None


_ledger_group: Coalescer[_LedgerRow] = Coalescer()
_PREPARED_MAX_ROWS = 16  # statements for larger groups are not kept prepared


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
    answer: IdempotentAnswer | None = None,
) -> bool:
    """Record one call. Runs in autocommit, so the row is durable when this returns.

    A single parameterised INSERT rather than `UsageRecord.objects.create`: this runs on every API
    call, and the ORM's model instantiation and SQL compilation cost more than the round trip. The
    row is the same (same columns, same constraints: a duplicate request id still raises
    IntegrityError), and inside an outer `atomic()` it joins that transaction exactly as before.

    With an idempotent `answer` the answer is stored in the same statement (so in the same commit) and
    the return value says whether it won: False when another execution of the same key was recorded
    first, in which case this row is recorded as a replay (face `idempotent-replay`, no units).
    """
    values = (
        request_id,
        client_request_id or "",
        principal.organisation_id,
        principal.api_key_id,
        face,
        meter if units else "",
        model_version_id,
        units,
        status_code,
        round(latency_ms, 3),
        timezone.now(),
    )
    return _ledger_insert(_LedgerRow(request_id=request_id, values=values, answer=answer))


def _ledger_insert(row: _LedgerRow) -> bool:
    """Commit the row before returning; concurrent calls of this process share one INSERT.

    Outside a transaction (every API request), rows that threads of this process record at the same
    moment go to the database as one multi-row INSERT, one commit (`billing.coalesce`): each caller
    returns only once the statement carrying its row has committed. Inside an outer `atomic()` the
    row joins that transaction on its own, exactly as `UsageRecord.objects.create` would.
    """
    if connection.in_atomic_block:
        _insert_one(row)
    else:
        _ledger_group.call(row, _insert_rows)
    return row.result is not False


def _insert_rows(rows: Sequence[_LedgerRow]) -> None:
    """One INSERT for `rows`; when it is this connection's first query, without a health check.

    With CONN_HEALTH_CHECKS Django sends `SELECT 1` before a request's first query. On the hot path
    (key and version served from their 1 s caches) the ledger INSERT is that first query, so the check
    doubled the round trips. Here the INSERT itself is the check: if the kept connection turns out to
    be broken, it is closed and the INSERT runs once more on a fresh one. If the first attempt had in
    fact committed before the connection broke, the retry meets our own (server-generated, unique)
    request ids, which means the rows are there. A constraint error fails only the rows that cause it.
    """
    db = connections[DEFAULT_DB_ALIAS]  # once: each `connection.x` is a thread-local lookup (~2 µs)
    checked = db.connection is None or db.health_check_done  # type: ignore[attr-defined]
    db.health_check_done = True  # type: ignore[attr-defined]
    try:
        _insert_group(rows)
    except (IntegrityError, ProgrammingError):  # a duplicate request id, or one key twice in the group
        _insert_each(rows, already_there_is_fine=False)
    except (OperationalError, InterfaceError):
        if checked:
            raise
        db.close()
        try:
            _insert_group(rows)
        except (IntegrityError, ProgrammingError):
            _insert_each(rows, already_there_is_fine=True)


def _insert_group(rows: Sequence[_LedgerRow]) -> None:
    """Plain rows: one multi-row INSERT. With an idempotent answer among them: the answer-storing
    statement, whose RETURNING sets each row's result (False: its answer lost)."""
    prepare = len(rows) <= _PREPARED_MAX_ROWS
    if all(row.answer is None for row in rows):
        _execute(_ledger_insert_sql(len(rows)), tuple(v for row in rows for v in row.values), prepare=prepare)
        return
    if connection.vendor != "postgresql":
        for row in rows:
            if row.answer is None:
                _execute(_ledger_insert_sql(), row.values)
                continue
            with transaction.atomic():
                row.result = _store_answer_portably(row)
        return
    values = [v for row in rows for v in (*row.values, *(row.answer.values() if row.answer else _NO_ANSWER))]
    values.append(_answers_expired_before(timezone.now()))
    faces = dict(_execute(_ledger_answer_insert_sql(len(rows)), tuple(values), prepare=prepare, fetch=True))
    for row in rows:
        row.result = faces[row.request_id] != LOST if row.answer is not None else None


def _insert_one(row: _LedgerRow) -> None:
    """One row on its own (inside a transaction, after a group failed, or off PostgreSQL)."""
    if row.answer is None:
        _execute(_ledger_insert_sql(), row.values)
    else:
        _insert_group([row])


def _store_answer_portably(row: _LedgerRow) -> bool:
    """What the answer-storing statement does, for databases without data-modifying CTEs (SQLite)."""
    answer = row.answer
    assert answer is not None
    now = row.values[_LEDGER_FIELDS.index("created_at")]
    organisation_id = row.values[_LEDGER_FIELDS.index("organisation")]
    fields = dict(zip(_ANSWER_FIELDS, answer.values(), strict=True))
    fields["headers"] = answer.headers
    stored = {**fields, "done": True, "created_at": now}
    try:
        with transaction.atomic():
            IdempotencyRecord.objects.create(organisation_id=organisation_id, **stored)
        won = True
    except IntegrityError:
        records = IdempotencyRecord.objects.filter(organisation_id=organisation_id, key=answer.key)
        won = bool(records.filter(created_at__lt=_answers_expired_before(now)).update(**stored))
    values = list(row.values)
    if not won:
        for name, value in (("face", LOST), ("meter", ""), ("units", 0)):
            values[_LEDGER_FIELDS.index(name)] = value
    _execute(_ledger_insert_sql(), tuple(values))
    return won


def _insert_each(rows: Sequence[_LedgerRow], *, already_there_is_fine: bool) -> None:
    for row in rows:
        try:
            _insert_one(row)
        except (IntegrityError, ProgrammingError) as exc:
            face = None
            if already_there_is_fine:  # the first attempt may have committed before the connection broke
                face = UsageRecord.objects.filter(request_id=row.request_id).values_list("face", flat=True).first()
            if face is None:
                row.error = exc
            elif row.answer is not None:
                row.result = face != LOST


def _execute(sql: str, values: tuple[Any, ...], *, prepare: bool = True, fetch: bool = False) -> list[Any]:
    """On PostgreSQL, a prepared statement with server-side binding: in autocommit (every API call's
    row) sent straight through libpq (`billing.prepared`), else through a psycopg cursor, which joins
    the connection's transaction as usual. Errors are Django's (`wrap_database_errors`).
    `fetch`: return the rows the statement returns (as text on the libpq path)."""
    db = connections[DEFAULT_DB_ALIAS]  # once: each `connection.x` is a thread-local lookup (~2 µs)
    if db.vendor != "postgresql":
        with db.cursor() as cursor:
            cursor.execute(sql, values)
            return list(cursor.fetchall()) if fetch else []
    db.ensure_connection()
    with db.wrap_database_errors:
        if prepare:
            rows = execute_prepared(db.connection, sql, values, fetch=fetch)
            if rows is not None:
                return rows
        handle = psycopg.Cursor(db.connection).execute(sql, values, prepare=prepare or None)
        return handle.fetchall() if fetch else []


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
    status_code: int = 200,
) -> bool:
    """Bill one finished batch chunk (units = its succeeded rows); True if this call wrote the row.

    The request id is derived from the batch and chunk, so a chunk run again never bills twice.
    `status_code`: 200 for a chunk that ran (even if some of its lines failed), else the status of
    its refusal (402, 429) or 500 for a chunk given up after its retries.
    """
    from .models import Meter

    return usage_record_once(
        request_id=f"batch_{batch_id}_chunk_{chunk_index}",
        organisation_id=organisation_id,
        api_key_id=api_key_id,
        face="batch",
        meter=Meter.BATCH_ROWS,
        units=units,
        status_code=status_code,
        model_version_id=model_version_id,
    )

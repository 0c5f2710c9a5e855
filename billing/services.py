"""Writes to the usage ledger."""

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import psycopg
from django.db import IntegrityError, InterfaceError, OperationalError, connection
from django.utils import timezone

from apiservice.auth import Principal

from .coalesce import Coalescer, Pending
from .models import UsageRecord

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


@dataclass(kw_only=True, eq=False)
class _LedgerRow(Pending):
    request_id: str
    values: tuple[Any, ...]


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
) -> None:
    """Record one call. Runs in autocommit, so the row is durable when this returns.

    A single parameterised INSERT rather than `UsageRecord.objects.create`: this runs on every API
    call, and the ORM's model instantiation and SQL compilation cost more than the round trip. The
    row is the same (same columns, same constraints: a duplicate request id still raises
    IntegrityError), and inside an outer `atomic()` it joins that transaction exactly as before.
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
    _ledger_insert(request_id, values)


def _ledger_insert(request_id: str, values: tuple[Any, ...]) -> None:
    """Commit the row before returning; concurrent calls of this process share one INSERT.

    Outside a transaction (every API request), rows that threads of this process record at the same
    moment go to the database as one multi-row INSERT, one commit (`billing.coalesce`): each caller
    returns only once the statement carrying its row has committed. Inside an outer `atomic()` the
    row joins that transaction on its own, exactly as `UsageRecord.objects.create` would.
    """
    if connection.in_atomic_block:
        _execute(_ledger_insert_sql(), values)
        return
    _ledger_group.call(_LedgerRow(request_id=request_id, values=values), _insert_rows)


def _insert_rows(rows: Sequence[_LedgerRow]) -> None:
    """One INSERT for `rows`; when it is this connection's first query, without a health check.

    With CONN_HEALTH_CHECKS Django sends `SELECT 1` before a request's first query. On the hot path
    (key and version served from their 1 s caches) the ledger INSERT is that first query, so the check
    doubled the round trips. Here the INSERT itself is the check: if the kept connection turns out to
    be broken, it is closed and the INSERT runs once more on a fresh one. If the first attempt had in
    fact committed before the connection broke, the retry meets our own (server-generated, unique)
    request ids, which means the rows are there. A constraint error fails only the rows that cause it.
    """
    sql = _ledger_insert_sql(len(rows))
    values = tuple(value for row in rows for value in row.values)
    checked = connection.connection is None or connection.health_check_done  # type: ignore[attr-defined]
    connection.health_check_done = True  # type: ignore[attr-defined]
    try:
        _execute(sql, values, prepare=len(rows) <= _PREPARED_MAX_ROWS)
    except IntegrityError:
        _insert_each(rows, already_there_is_fine=False)
    except (OperationalError, InterfaceError):
        if checked:
            raise
        connection.close()
        try:
            _execute(sql, values, prepare=len(rows) <= _PREPARED_MAX_ROWS)
        except IntegrityError:
            _insert_each(rows, already_there_is_fine=True)


def _insert_each(rows: Sequence[_LedgerRow], *, already_there_is_fine: bool) -> None:
    for row in rows:
        try:
            _execute(_ledger_insert_sql(), row.values)
        except IntegrityError as exc:
            if not (already_there_is_fine and UsageRecord.objects.filter(request_id=row.request_id).exists()):
                row.error = exc


def _execute(sql: str, values: tuple[Any, ...], *, prepare: bool = True) -> None:
    """On PostgreSQL, a prepared statement with server-side binding on the connection's psycopg handle
    (no SQL interpolation per call; a third less CPU than Django's client-side-binding cursor).
    Errors are Django's (`wrap_database_errors`), and it joins the connection's transaction as usual."""
    if connection.vendor != "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(sql, values)
        return
    connection.ensure_connection()
    with connection.wrap_database_errors:
        psycopg.Cursor(connection.connection).execute(sql, values, prepare=prepare or None)


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

    return usage_record_once(
        request_id=f"batch_{batch_id}_chunk_{chunk_index}",
        organisation_id=organisation_id,
        api_key_id=api_key_id,
        face="batch",
        meter=Meter.BATCH_ROWS,
        units=units,
        status_code=200,
        model_version_id=model_version_id,
    )

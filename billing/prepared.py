"""The ledger's statements on PostgreSQL, sent straight through the connection's libpq handle.

The ledger INSERT runs on every API call. psycopg's cursor spends more CPU on it than the statement
costs PostgreSQL (cursor set-up, query conversion, one dumper per parameter, its prepared-statement
cache): 45-60 µs of the worker's CPU per call on the benchmark host. Here a statement is prepared once per connection
under its own name and then sent with `PQsendQueryPrepared`, its parameters as text (bytes values
in binary), PostgreSQL inferring their types from the statement; the answer is awaited with psycopg's
own wait loop, and errors are psycopg's exceptions, so Django's wrapper maps them as usual.

Only on a connection in autocommit with no transaction open (each API request's ledger row): the
statement then commits by itself, exactly as through psycopg. Anything else (inside `atomic()`, a
value of another type, prepared statements turned off with `DATABASE_PREPARED_STATEMENTS=false` for a
pooler that cannot carry them) returns None and the caller uses psycopg's cursor. A statement that
the server no longer knows (`DISCARD ALL`) is prepared again.
"""

import hashlib
import weakref
from collections.abc import Sequence
from datetime import datetime
from functools import cache
from typing import Any

import psycopg
from psycopg import errors, generators, pq

_COMMAND_OK = (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK)
_IDLE = pq.TransactionStatus.IDLE
_prepared_on: "weakref.WeakKeyDictionary[psycopg.Connection[Any], set[bytes]]" = weakref.WeakKeyDictionary()


@cache
def _statement(sql: str) -> tuple[bytes, bytes]:
    """(name, SQL with $1..$n placeholders) for a statement written with `%s` placeholders."""
    parts = sql.split("%s")
    numbered = parts[0] + "".join(f"${index}{part}" for index, part in enumerate(parts[1:], start=1))
    return b"mm_" + hashlib.sha256(sql.encode()).hexdigest()[:24].encode(), numbered.encode()


def _encoded(value: Any) -> bytes | None:
    """A parameter in PostgreSQL's text input format (bytes pass through, sent as binary)."""
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bool):
        return b"true" if value else b"false"
    if isinstance(value, int | float):
        return repr(value).encode()
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.isoformat().encode()
    raise TypeError(type(value).__name__)


def _wait_ok(conn: "psycopg.Connection[Any]") -> pq.abc.PGresult:
    result = conn.wait(generators.execute(conn.pgconn))[-1]
    if result.status not in _COMMAND_OK:
        raise errors.error_from_result(result, encoding=conn.info.encoding)
    return result


def _prepare(conn: "psycopg.Connection[Any]", name: bytes, sql: bytes) -> None:
    conn.pgconn.send_prepare(name, sql)
    _wait_ok(conn)


def execute_prepared(
    conn: "psycopg.Connection[Any]", sql: str, values: Sequence[Any], *, fetch: bool
) -> list[tuple[str | None, ...]] | None:
    """Run `sql` with `values` as a prepared statement; its rows as text when `fetch`. None when this
    connection or these values need psycopg's cursor instead (nothing was sent)."""
    pgconn = conn.pgconn
    if conn.prepare_threshold is None or not conn.autocommit or pgconn.transaction_status != _IDLE:
        return None  # statements not to be prepared (DATABASE_PREPARED_STATEMENTS off), or a transaction
    try:
        params = [_encoded(value) for value in values]
    except TypeError:
        return None
    name, numbered = _statement(sql)
    formats = [1 if isinstance(value, bytes) else 0 for value in values]
    with conn.lock:
        prepared = _prepared_on.get(conn)
        if prepared is None:
            prepared = _prepared_on[conn] = set()
        if name not in prepared:
            _prepare(conn, name, numbered)
            prepared.add(name)
        pgconn.send_query_prepared(name, params, param_formats=formats)
        try:
            result = _wait_ok(conn)
        except errors.InvalidSqlStatementName:  # deallocated behind our back (DISCARD ALL): once more
            _prepare(conn, name, numbered)
            pgconn.send_query_prepared(name, params, param_formats=formats)
            result = _wait_ok(conn)
    if not fetch:
        return []
    return [_text_row(result, row) for row in range(result.ntuples)]


def _text_row(result: pq.abc.PGresult, row: int) -> tuple[str | None, ...]:
    values = (result.get_value(row, column) for column in range(result.nfields))
    return tuple(None if value is None else bytes(value).decode() for value in values)

"""Writes to the usage ledger."""

from functools import cache

from django.db import connection
from django.utils import timezone

from apiservice.auth import Principal

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
def _ledger_insert_sql() -> str:
    """One INSERT statement, built once from the model's metadata (table and column names)."""
    meta = UsageRecord._meta
    quote = connection.ops.quote_name
    columns = ", ".join(quote(meta.get_field(name).column) for name in _LEDGER_FIELDS)  # type: ignore[union-attr]
    placeholders = ", ".join(["%s"] * len(_LEDGER_FIELDS))
    return f"INSERT INTO {quote(meta.db_table)} ({columns}) VALUES ({placeholders})"


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
        client_request_id,
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
    with connection.cursor() as cursor:
        cursor.execute(_ledger_insert_sql(), values)

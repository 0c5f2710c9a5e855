"""The ledger's statements sent straight through libpq: the same rows, errors and transactions as psycopg."""

from decimal import Decimal
from typing import Any

import pytest
from django.db import IntegrityError, connection, transaction

from apiservice import services as org_services
from apiservice.auth import Principal, authenticate_key
from billing.models import IdempotencyRecord, UsageRecord
from billing.prepared import _prepared_on, _statement, execute_prepared
from billing.services import IdempotentAnswer, _ledger_insert_sql, usage_record

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def principal(org: Any) -> Principal:
    _, key = org_services.api_key_create(organisation=org, name="k")
    return authenticate_key(f"Bearer {key}")


def _record(principal: Principal, request_id: str, **extra: Any) -> bool:
    return usage_record(
        request_id=request_id, principal=principal, face="v1-predict", status_code=200, latency_ms=1.23456, **extra
    )


def _prepared_here() -> set[bytes]:
    return _prepared_on.get(connection.connection, set())


def test_a_duplicate_request_id_is_an_integrity_error_on_the_libpq_path_too(principal: Principal) -> None:
    _record(principal, "req_dup")
    with pytest.raises(IntegrityError):
        _record(principal, "req_dup")
    _record(principal, "req_after")  # the connection is still good
    assert UsageRecord.objects.filter(request_id__in=["req_dup", "req_after"]).count() == 2


def test_a_statement_deallocated_behind_its_back_is_prepared_again(principal: Principal) -> None:
    _record(principal, "req_before")
    with connection.cursor() as cursor:
        cursor.execute("DEALLOCATE ALL")
    _record(principal, "req_after")
    assert UsageRecord.objects.filter(request_id__in=["req_before", "req_after"]).count() == 2


def test_inside_a_transaction_the_row_joins_it_and_rolls_back_with_it(principal: Principal) -> None:
    seen_inside: list[bool] = []

    def record_then_fail() -> None:
        with transaction.atomic():
            _record(principal, "req_rolled_back")
            seen_inside.append(UsageRecord.objects.filter(request_id="req_rolled_back").exists())
            raise RuntimeError("the view failed")

    with pytest.raises(RuntimeError):
        record_then_fail()
    assert seen_inside == [True]
    assert not UsageRecord.objects.filter(request_id="req_rolled_back").exists()


def test_an_idempotent_answer_keeps_its_bytes_and_a_second_execution_loses(principal: Principal) -> None:
    body = bytes(range(256)) + b"\\x00"

    def answer() -> IdempotentAnswer:
        return IdempotentAnswer(
            key="k-1",
            fingerprint="f" * 64,
            status_code=201,
            content_type="application/octet-stream",
            body=body,
            headers={"X-Model-Version": "2"},
        )

    assert _record(principal, "req_i1", units=1, meter="online_predictions", answer=answer()) is True
    assert _record(principal, "req_i2", units=1, meter="online_predictions", answer=answer()) is False
    stored = IdempotencyRecord.objects.get(key="k-1")
    assert (bytes(stored.body), stored.status_code, stored.content_type, stored.headers, stored.done) == (
        body,
        201,
        "application/octet-stream",
        {"X-Model-Version": "2"},
        True,
    )
    loser = UsageRecord.objects.get(request_id="req_i2")
    assert (loser.face, loser.units, loser.meter) == ("idempotent-replay", 0, "")


def test_values_it_cannot_encode_and_open_transactions_are_left_to_psycopg() -> None:
    connection.ensure_connection()
    conn = connection.connection
    assert execute_prepared(conn, "SELECT %s::numeric", [Decimal("1.5")], fetch=True) is None
    assert execute_prepared(conn, "SELECT %s::int + 1, %s, NULL::text", [41, "x"], fetch=True) == [("42", "x", None)]
    with transaction.atomic():
        assert execute_prepared(connection.connection, "SELECT %s::int", [1], fetch=True) is None


def test_with_prepared_statements_turned_off_it_leaves_the_statement_to_psycopg(
    principal: Principal, monkeypatch: pytest.MonkeyPatch
) -> None:
    connection.close()
    connection.ensure_connection()  # a fresh connection: nothing prepared on it yet
    monkeypatch.setattr(connection.connection, "prepare_threshold", None)  # DATABASE_PREPARED_STATEMENTS=false
    assert execute_prepared(connection.connection, "SELECT %s::int", [1], fetch=True) is None
    _record(principal, "req_unprepared")
    assert _statement(_ledger_insert_sql())[0] not in _prepared_here()
    assert UsageRecord.objects.filter(request_id="req_unprepared").exists()

"""The ledger insert: the same row as the ORM would write, and no row lost to a dead connection."""

from typing import Any

import psycopg
import pytest
from django.db import IntegrityError, connection
from django.utils import timezone

from apiservice.auth import authenticate_key
from billing.models import IdempotencyRecord, UsageRecord
from billing.services import IdempotentAnswer, usage_record
from tests.concurrency import run_together


def _record(principal: Any, request_id: str, **extra: Any) -> None:
    usage_record(
        request_id=request_id, principal=principal, face="v1-predict", status_code=200, latency_ms=1.23456, **extra
    )


def _assert_every_column_written(principal: Any, version_id: int) -> None:
    _record(
        principal, "req_a", units=3, meter="online_predictions", model_version_id=version_id, client_request_id="c-1"
    )
    row = UsageRecord.objects.get(request_id="req_a")
    assert (row.organisation_id, row.api_key_id, row.face, row.meter, row.units) == (
        principal.organisation_id,
        principal.api_key_id,
        "v1-predict",
        "online_predictions",
        3,
    )
    assert (row.model_version_id, row.client_request_id, row.status_code, row.latency_ms) == (
        version_id,
        "c-1",
        200,
        1.235,
    )
    assert row.created_at is not None


def test_it_writes_every_column(api_key: str, diabetes: Any) -> None:
    _assert_every_column_written(authenticate_key(f"Bearer {api_key}"), diabetes.pk)


@pytest.mark.django_db(transaction=True)
def test_outside_a_transaction_it_writes_every_column_through_libpq(api_key: str, diabetes: Any) -> None:
    from billing.prepared import _prepared_on, _statement
    from billing.services import _ledger_insert_sql

    _assert_every_column_written(authenticate_key(f"Bearer {api_key}"), diabetes.pk)
    assert _statement(_ledger_insert_sql())[0] in _prepared_on[connection.connection]
    _record(authenticate_key(f"Bearer {api_key}"), "req_no_version")
    assert UsageRecord.objects.values_list("model_version_id", "meter").get(request_id="req_no_version") == (None, "")


def test_it_leaves_the_meter_empty_without_units(api_key: str) -> None:
    _record(authenticate_key(f"Bearer {api_key}"), "req_b", units=0, meter="online_predictions")
    assert UsageRecord.objects.get(request_id="req_b").meter == ""


def test_it_refuses_a_duplicate_request_id(api_key: str) -> None:
    principal = authenticate_key(f"Bearer {api_key}")
    _record(principal, "req_c")
    with pytest.raises(IntegrityError):
        _record(principal, "req_c")


@pytest.mark.django_db(transaction=True)
def test_it_records_the_call_when_the_kept_connection_has_died(org: Any) -> None:
    from apiservice import services as org_services

    _, key = org_services.api_key_create(organisation=org, name="k")
    principal = authenticate_key(f"Bearer {key}")
    _record(principal, "req_d1")
    connection.close_if_unusable_or_obsolete()  # what Django does when the next request starts
    db = connection.settings_dict
    with psycopg.connect(
        host=db["HOST"] or "127.0.0.1",
        port=db["PORT"] or 5432,
        user=db["USER"],
        password=db["PASSWORD"] or None,
        dbname=db["NAME"],
        autocommit=True,
    ) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (connection.connection.info.backend_pid,))
    _record(principal, "req_d2")
    assert set(UsageRecord.objects.values_list("request_id", flat=True)) == {"req_d1", "req_d2"}


@pytest.mark.django_db(transaction=True)
def test_calls_recorded_at_the_same_moment_are_all_committed_when_each_returns(org: Any) -> None:
    from apiservice import services as org_services

    _, key = org_services.api_key_create(organisation=org, name="k")
    principal = authenticate_key(f"Bearer {key}")
    seen_on_return: list[bool] = []

    def record_and_look(index: int) -> None:
        _record(principal, f"req_g{index}", units=1, meter="online_predictions")
        with psycopg.connect(**_dsn(), autocommit=True) as other:  # another session sees it committed
            found = other.execute("SELECT 1 FROM billing_usagerecord WHERE request_id = %s", (f"req_g{index}",))
            seen_on_return.append(found.fetchone() is not None)

    assert run_together(24, record_and_look) == [None] * 24
    assert seen_on_return == [True] * 24
    assert UsageRecord.objects.filter(request_id__startswith="req_g").count() == 24


@pytest.mark.django_db(transaction=True)
def test_a_duplicate_in_a_group_fails_only_its_own_call(org: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from apiservice import services as org_services

    _, key = org_services.api_key_create(organisation=org, name="k")
    principal = authenticate_key(f"Bearer {key}")
    _record(principal, "req_dup")
    started = time.monotonic()
    outcomes, group_sizes = _grouped(
        monkeypatch, 12, lambda i: _record(principal, "req_dup" if i == 5 else f"req_h{i}")
    )
    assert time.monotonic() - started >= 0.4
    assert max(group_sizes) > 1, group_sizes
    assert isinstance(outcomes[5], IntegrityError)
    assert [o for i, o in enumerate(outcomes) if i != 5] == [None] * 11
    assert UsageRecord.objects.filter(request_id__startswith="req_h").count() == 11
    assert UsageRecord.objects.filter(request_id="req_dup").count() == 1


def _grouped(monkeypatch: pytest.MonkeyPatch, calls: int, record: Any) -> tuple[list[Any], list[int]]:
    """Run `record(i)` for `calls` threads while the ledger table is held for 0.5 s, so the first INSERT
    waits and the other calls queue up behind it into groups. Returns the outcomes and group sizes."""
    import threading

    from billing import services

    group_sizes: list[int] = []
    insert_rows = services._insert_rows
    monkeypatch.setattr(services, "_insert_rows", lambda rows: (group_sizes.append(len(rows)), insert_rows(rows)))
    locked, release = threading.Event(), threading.Event()

    def hold_table() -> None:
        with psycopg.connect(**_dsn()) as other:
            other.execute("LOCK TABLE billing_usagerecord IN EXCLUSIVE MODE")
            locked.set()
            release.wait(5)

    holder = threading.Thread(target=hold_table)
    holder.start()
    locked.wait(5)
    threading.Timer(0.5, release.set).start()
    outcomes = run_together(calls, record)
    holder.join()
    return outcomes, group_sizes


def _answer(key: str, body: bytes = b'{"predictions": [1]}') -> IdempotentAnswer:
    return IdempotentAnswer(
        key=key, fingerprint="f" * 64, status_code=200, content_type="application/json", body=body, headers={}
    )


@pytest.mark.django_db(transaction=True)
def test_a_group_stores_the_idempotent_answers_of_its_rows_in_the_same_statement(
    org: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from apiservice import services as org_services

    _, key = org_services.api_key_create(organisation=org, name="k")
    principal = authenticate_key(f"Bearer {key}")

    def record(i: int) -> bool:
        answer = _answer(f"key-{i}", body=b"%d" % i) if i % 3 else None
        return usage_record(
            request_id=f"req_a{i}", principal=principal, face="v1-predict", status_code=200, latency_ms=1.0,
            units=1, meter="online_predictions", answer=answer,
        )  # fmt: skip

    outcomes, group_sizes = _grouped(monkeypatch, 12, record)
    assert outcomes == [True] * 12
    assert max(group_sizes) > 1, group_sizes
    stored = {r.key: bytes(r.body) for r in IdempotencyRecord.objects.filter(done=True)}
    assert stored == {f"key-{i}": b"%d" % i for i in range(12) if i % 3}
    assert UsageRecord.objects.filter(face="v1-predict", units=1).count() == 12


@pytest.mark.django_db(transaction=True)
def test_one_key_twice_in_a_group_is_billed_once(org: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from apiservice import services as org_services

    _, key = org_services.api_key_create(organisation=org, name="k")
    principal = authenticate_key(f"Bearer {key}")

    def record(i: int) -> bool:
        return usage_record(
            request_id=f"req_s{i}", principal=principal, face="v1-predict", status_code=200, latency_ms=1.0,
            units=1, meter="online_predictions", answer=_answer("same" if i in (3, 8) else f"key-{i}"),
        )  # fmt: skip

    outcomes, group_sizes = _grouped(monkeypatch, 10, record)
    assert max(group_sizes) > 1, group_sizes
    assert sorted(outcomes[i] for i in (3, 8)) == [False, True]
    assert [o for i, o in enumerate(outcomes) if i not in (3, 8)] == [True] * 8
    loser = UsageRecord.objects.get(request_id=f"req_s{8 if outcomes[3] else 3}")
    assert (loser.face, loser.units, loser.meter) == ("idempotent-replay", 0, "")
    assert UsageRecord.objects.filter(units=1).count() == 9
    assert IdempotencyRecord.objects.filter(key="same").count() == 1


def _dsn() -> dict[str, Any]:
    db = connection.settings_dict
    return {
        "host": db["HOST"] or "127.0.0.1",
        "port": db["PORT"] or 5432,
        "user": db["USER"],
        "password": db["PASSWORD"] or None,
        "dbname": db["NAME"],
    }


# The ledger has no foreign-key constraints in the database (an INSERT would lock the organisation's
# and the key's rows on every call); what they guarded is Django's `on_delete`, held here.


def test_an_organisation_the_ledger_names_cannot_be_deleted(api_key: str, org: Any) -> None:
    from django.db.models import ProtectedError

    _record(authenticate_key(f"Bearer {api_key}"), "req_org", units=1, meter="online_predictions")
    with pytest.raises(ProtectedError):
        org.delete()
    assert UsageRecord.objects.filter(request_id="req_org", organisation=org).exists()


def test_a_model_version_the_ledger_names_cannot_be_deleted(api_key: str, diabetes: Any) -> None:
    from django.db.models import ProtectedError

    _record(
        authenticate_key(f"Bearer {api_key}"),
        "req_v",
        units=1,
        meter="online_predictions",
        model_version_id=diabetes.pk,
    )
    with pytest.raises(ProtectedError):
        diabetes.delete()


def test_deleting_an_api_key_keeps_its_ledger_rows_and_clears_the_key(api_key: str) -> None:
    from apiservice.models import APIKey

    principal = authenticate_key(f"Bearer {api_key}")
    _record(principal, "req_k", units=2, meter="online_predictions")
    APIKey.objects.filter(pk=principal.api_key_id).delete()
    row = UsageRecord.objects.get(request_id="req_k")
    assert (row.api_key_id, row.organisation_id, row.units) == (None, principal.organisation_id, 2)


def test_a_usage_report_with_ledger_rows_cannot_be_deleted_and_its_rows_are_found_by_it(api_key: str, org: Any) -> None:
    from django.db.models import ProtectedError

    from billing.models import UsageReport

    _record(authenticate_key(f"Bearer {api_key}"), "req_r", units=1, meter="online_predictions")
    now = timezone.now()
    report = UsageReport.objects.create(
        id="rep_test",
        organisation=org,
        meter="online_predictions",
        stripe_customer_id="cus_1",
        units=1,
        rows=1,
        first_at=now,
        last_at=now,
        event_timestamp=now,
    )
    UsageRecord.objects.filter(request_id="req_r").update(report=report)
    assert list(report.records.values_list("request_id", flat=True)) == ["req_r"]
    with pytest.raises(ProtectedError):
        report.delete()


def test_deleting_an_organisation_deletes_its_idempotent_answers(org: Any) -> None:
    IdempotencyRecord.objects.create(organisation=org, key="k-1", fingerprint="f")
    org.delete()
    assert not IdempotencyRecord.objects.filter(key="k-1").exists()

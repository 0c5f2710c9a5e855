"""The ledger insert: the same row as the ORM would write, and no row lost to a dead connection."""

from typing import Any

import psycopg
import pytest
from django.db import IntegrityError, connection

from apiservice.auth import authenticate_key
from billing.models import UsageRecord
from billing.services import usage_record


def _record(principal: Any, request_id: str, **extra: Any) -> None:
    usage_record(
        request_id=request_id, principal=principal, face="v1-predict", status_code=200, latency_ms=1.23456, **extra
    )


def test_it_writes_every_column(api_key: str, diabetes: Any) -> None:
    principal = authenticate_key(f"Bearer {api_key}")
    _record(
        principal, "req_a", units=3, meter="online_predictions", model_version_id=diabetes.pk, client_request_id="c-1"
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
        diabetes.pk,
        "c-1",
        200,
        1.235,
    )
    assert row.created_at is not None


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

"""A hard-capped plan's monthly `batch_rows` quota: held per chunk before the model runs, never passed."""

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from batches import execution
from batches.models import Batch, BatchChunk
from billing import limits
from billing.models import Meter, UsageRecord
from tests.billing.conftest import _fresh_billing_caches, account_on, free_quota, key_limit  # noqa: F401

from .conftest import TERMINAL, content, create, json_lines, jsonl, run, upload

FREE_CAP = 10_000  # billing/catalog.py: the free plan's batch_rows per month


def billed_rows() -> int:
    return sum(UsageRecord.objects.filter(meter=Meter.BATCH_ROWS).values_list("units", flat=True))


def test_it_stops_a_free_organisation_exactly_at_its_monthly_cap(api, org, diabetes, in_process, settings):
    account_on(org, "free")
    settings.BATCH_CHUNK_ROWS = 50_000  # the default: a free organisation's chunks are cut to a tenth of its cap
    batch = run(create(api, upload(api, jsonl(12_000))["id"])["id"])
    assert BatchChunk.objects.filter(batch=batch).count() == 12  # 1,000 rows each: ten fit, two do not
    assert billed_rows() == FREE_CAP
    done = api.get(f"/v1/batches/{batch.uid}").json()
    assert done["status"] == "completed"
    assert done["request_counts"] == {"total": 12_000, "completed": FREE_CAP, "failed": 2_000}
    refusal = done["errors"]["data"][0]
    assert refusal["code"] == "quota_exceeded"
    assert refusal["line"] is None
    assert f"{FREE_CAP} batch_rows" in refusal["message"]
    errors = json_lines(content(api, done["error_file_id"]))
    assert {error["error"]["code"] for error in errors} == {"quota_exceeded"}
    assert [error["custom_id"] for error in errors] == [f"req-{i}" for i in range(FREE_CAP, 12_000)]
    assert len(json_lines(content(api, done["output_file_id"]))) == FREE_CAP
    statuses = UsageRecord.objects.filter(meter__in=[Meter.BATCH_ROWS, ""], face="batch").values_list("status_code")
    assert sorted(s for (s,) in statuses) == [200] * 10 + [429] * 2  # the refused chunks read as refused in usage


def test_it_runs_no_model_for_a_refused_chunk(api, org, diabetes, in_process, settings, monkeypatch):
    account_on(org, "free")
    free_quota(Meter.BATCH_ROWS, 10)
    created = create(api, upload(api, jsonl(11))["id"])
    free_quota(Meter.BATCH_ROWS, 0)  # used up (here: lowered) after the batch was created
    monkeypatch.setattr(execution, "predict", lambda **_: pytest.fail("the model ran"))
    batch = run(created["id"])
    assert (batch.status, batch.completed, batch.failed) == ("completed", 0, 11)
    assert billed_rows() == 0


def test_it_bills_a_chunk_run_again_once_and_holds_nothing_for_it(api, org, diabetes, in_process, settings):
    account_on(org, "free")
    settings.BATCH_CHUNK_ROWS = 50
    batch = run(create(api, upload(api, jsonl(100))["id"])["id"])
    assert billed_rows() == 100
    first = BatchChunk.objects.get(batch=batch, index=0)
    BatchChunk.objects.filter(pk=first.pk).update(status=BatchChunk.Status.PENDING)  # a redelivered chunk
    execution.chunk_run(chunk_id=first.pk)
    assert billed_rows() == 100
    # The counter holds exactly what was billed: all the rest of the month's quota still fits, no more.
    entitlement = limits.entitlement_get(organisation_id=org.pk)
    hold = {"organisation_id": org.pk, "api_key_id": None, "meter": Meter.BATCH_ROWS, "entitlement": entitlement}
    with pytest.raises(limits.QuotaRefused):
        limits.quota_reserve(**hold, units=FREE_CAP - 100 + 1)
    limits.quota_reserve(**hold, units=FREE_CAP - 100)


def test_it_refuses_to_create_a_batch_once_the_quota_is_used_up(api, org, diabetes, in_process):
    account_on(org, "free")
    free_quota(Meter.BATCH_ROWS, 5)
    file = upload(api, jsonl(5))
    run(create(api, file["id"])["id"])
    assert billed_rows() == 5
    response = api.post_json("/v1/batches", {"input_file_id": file["id"], "model": "diabetes"})
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "quota_exceeded"
    assert 0 < int(response["Retry-After"]) <= limits.seconds_to_next_month()
    assert Batch.objects.count() == 1


def test_it_creates_batches_on_uncapped_plans_whatever_they_used(api, org, diabetes, in_process):
    account_on(org, "payg")
    UsageRecord.objects.create(
        organisation=org, request_id="earlier", face="batch", meter=Meter.BATCH_ROWS, units=10**7, status_code=200
    )
    file = upload(api, jsonl(2))
    assert api.post_json("/v1/batches", {"input_file_id": file["id"], "model": "diabetes"}).status_code == 201


@pytest.mark.live
def test_a_worker_never_bills_past_the_cap_with_chunks_running_at_once(
    transactional_db, batch_worker, api, api_key, org, diabetes
):
    cap = 120
    account_on(org, "free")
    free_quota(Meter.BATCH_ROWS, cap)
    key_limit(api_key, rate_limit="100000/minute")  # the free plan's 60/minute is not what this tests
    batch = create(api, upload(api, jsonl(230))["id"])
    deadline = time.monotonic() + 180
    while Batch.objects.get(uid=batch["id"]).status not in TERMINAL:
        assert time.monotonic() < deadline, "batch stuck"
        time.sleep(0.2)
    done = api.get(f"/v1/batches/{batch['id']}").json()
    assert done["status"] == "completed", done
    billed = billed_rows()
    assert 0 < billed <= cap
    assert done["request_counts"] == {"total": 230, "completed": billed, "failed": 230 - billed}
    assert done["errors"]["data"][0]["code"] == "quota_exceeded"
    refused = BatchChunk.objects.filter(batch__uid=batch["id"], status=BatchChunk.Status.FAILED)
    assert refused.exists()
    assert all(chunk.rows > cap - billed for chunk in refused)  # refused only when it did not fit
    errors = json_lines(content(api, done["error_file_id"]))
    assert len(errors) == 230 - billed
    assert {error["error"]["code"] for error in errors} == {"quota_exceeded"}


def test_with_metering_off_it_creates_and_runs_a_batch_past_the_used_up_quota(api, org, diabetes, in_process, settings):
    account_on(org, "free")
    free_quota(Meter.BATCH_ROWS, 5)
    run(create(api, upload(api, jsonl(5))["id"])["id"])  # the month's quota, used up
    settings.METERING_ENABLED = False
    response = api.post_json("/v1/batches", {"input_file_id": upload(api, jsonl(12))["id"], "model": "diabetes"})
    assert response.status_code == 201, response.content  # 429 with metering on
    batch = run(response.json()["id"])
    assert BatchChunk.objects.filter(batch=batch).count() == 1  # not cut to a tenth of a cap nothing holds
    done = api.get(f"/v1/batches/{batch.uid}").json()
    assert done["request_counts"] == {"total": 12, "completed": 12, "failed": 0}
    assert billed_rows() == 17  # the ledger still records


def test_with_metering_off_a_chunk_holds_nothing_and_runs(api, org, diabetes, in_process, settings):
    account_on(org, "free")
    free_quota(Meter.BATCH_ROWS, 10)
    created = create(api, upload(api, jsonl(11))["id"])
    free_quota(Meter.BATCH_ROWS, 0)  # used up (here: lowered) after the batch was created
    settings.METERING_ENABLED = False
    batch = run(created["id"])
    assert (batch.status, batch.completed, batch.failed) == ("completed", 11, 0)
    assert billed_rows() == 11


@pytest.mark.parametrize(
    "standing",
    [{"status": "canceled"}, {"status": "past_due", "past_due_since": timezone.now() - timedelta(days=30)}],
    ids=["cancelled", "past-due-beyond-grace"],
)
def test_it_refuses_to_create_a_batch_for_an_account_whose_standing_blocks_it(api, org, diabetes, in_process, standing):
    account_on(org, "payg")
    file = upload(api, jsonl(2))
    account_on(org, "payg", **standing)
    response = api.post_json("/v1/batches", {"input_file_id": file["id"], "model": "diabetes"})
    assert response.status_code == 402, response.content
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("billing_error", "payment_required")
    assert "POST /v1/billing/" in error["message"]  # checkout when cancelled, portal when past due
    assert not Batch.objects.exists()


def test_a_cancelled_account_gets_402_rather_than_a_replay_of_its_batch(api, org, diabetes, in_process):
    account_on(org, "payg")
    file = upload(api, jsonl(2))
    create(api, file["id"], idempotency_key="k-1")
    account_on(org, "payg", status="canceled")
    body = {"input_file_id": file["id"], "model": "diabetes"}
    response = api.post_json("/v1/batches", body, HTTP_IDEMPOTENCY_KEY="k-1")
    assert response.status_code == 402  # as online calls: the standing is checked before any replay
    assert response.json()["error"]["code"] == "payment_required"


def test_it_creates_a_batch_for_a_past_due_account_within_the_grace_period(api, org, diabetes, in_process):
    account_on(org, "payg", status="past_due", past_due_since=timezone.now() - timedelta(days=1))
    file = upload(api, jsonl(2))
    assert api.post_json("/v1/batches", {"input_file_id": file["id"], "model": "diabetes"}).status_code == 201


def test_it_runs_no_chunk_of_a_queued_batch_once_the_account_is_cancelled(
    api, org, diabetes, in_process, settings, monkeypatch
):
    account_on(org, "payg")
    settings.BATCH_CHUNK_ROWS = 5
    created = create(api, upload(api, jsonl(12))["id"])
    account_on(org, "payg", status="canceled")  # after the batch was queued
    monkeypatch.setattr(execution, "predict", lambda **_: pytest.fail("the model ran"))
    batch = run(created["id"])
    assert BatchChunk.objects.filter(batch=batch, status=BatchChunk.Status.FAILED).count() == 3
    done = api.get(f"/v1/batches/{batch.uid}").json()
    assert done["status"] == "completed"
    assert done["request_counts"] == {"total": 12, "completed": 0, "failed": 12}
    refusal = done["errors"]["data"][0]
    assert (refusal["code"], refusal["line"]) == ("payment_required", None)
    assert [e["code"] for e in done["errors"]["data"]].count("payment_required") == 1
    errors = json_lines(content(api, done["error_file_id"]))
    assert {error["error"]["code"] for error in errors} == {"payment_required"}
    assert [error["custom_id"] for error in errors] == [f"req-{i}" for i in range(12)]
    assert done["output_file_id"] is None
    assert billed_rows() == 0
    assert set(UsageRecord.objects.filter(face="batch").values_list("status_code", flat=True)) == {402}


def test_with_metering_off_it_creates_and_runs_a_batch_whatever_the_account_standing(
    api, org, diabetes, in_process, settings
):
    account_on(org, "payg", status="canceled")
    settings.METERING_ENABLED = False  # as online calls and downloads: nothing refused, the ledger still records
    batch = run(create(api, upload(api, jsonl(3))["id"])["id"])
    assert (batch.status, batch.completed, batch.failed) == ("completed", 3, 0)
    assert billed_rows() == 3


def test_a_chunk_given_up_after_its_retries_fails_its_lines_unbilled_and_reads_as_a_server_error_in_usage(
    api, org, diabetes, in_process, settings, monkeypatch
):
    created = create(api, upload(api, jsonl(3))["id"])
    monkeypatch.setattr(execution, "predict", lambda **_: pytest.fail("the model ran"))
    real_run = execution.chunk_run

    def after_every_attempt_failed(*, chunk_id):
        BatchChunk.objects.filter(pk=chunk_id).update(attempts=settings.BATCH_CHUNK_MAX_ATTEMPTS)
        real_run(chunk_id=chunk_id)  # its claim counts one more attempt than allowed

    monkeypatch.setattr(execution, "chunk_run", after_every_attempt_failed)
    batch = run(created["id"])
    assert (batch.completed, batch.failed) == (0, 3)
    errors = json_lines(content(api, api.get(f"/v1/batches/{batch.uid}").json()["error_file_id"]))
    assert {error["error"]["code"] for error in errors} == {"chunk_failed"}
    assert billed_rows() == 0
    assert set(UsageRecord.objects.filter(face="batch").values_list("status_code", flat=True)) == {500}

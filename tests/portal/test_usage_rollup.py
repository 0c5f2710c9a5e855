"""The daily rollup gives the same dashboards as the raw ledger, and latency percentiles within 5%."""

import math
import random
import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.db.models import F, FloatField
from django.utils import timezone

from apiservice.models import Organisation
from billing.models import UsageRecord
from models_registry.models import ModelVersion
from portal import latency, selectors, services
from portal.models import UsageRollup, UsageRollupCursor


def _ledger(
    org: Organisation, version: ModelVersion | None, when: datetime, latency_ms: float, status: int = 200
) -> None:
    UsageRecord.objects.create(
        request_id="req_" + uuid.uuid4().hex,
        organisation=org,
        face="v1-predict",
        meter="online_predictions" if status < 400 else "",
        model_version=version,
        units=2 if status < 400 else 0,
        status_code=status,
        latency_ms=latency_ms,
        created_at=when,
    )


@pytest.fixture
def history(org: Organisation, other_org: Organisation, iris: ModelVersion, diabetes: ModelVersion) -> list[float]:
    rng = random.Random(7)
    now = timezone.now()
    latencies = []
    for i in range(300):
        value = rng.lognormvariate(2.0, 0.8)
        latencies.append(value)
        when = now - timedelta(days=i % 6, minutes=rng.randint(0, 600))
        _ledger(org if i % 3 else other_org, iris if i % 2 else diabetes, when, value, 500 if i % 17 == 0 else 200)
    return latencies


def _dashboard(**filters: Any) -> dict[str, Any]:
    today = timezone.localdate()
    flt = selectors.UsageFilter(start=today - timedelta(days=9), end=today, **filters)
    return selectors.usage_dashboard(flt=flt)


@pytest.mark.parametrize("filters", [{}, {"organisation_id": "org"}, {"model_id": "iris"}])
def test_it_gives_the_same_dashboard_from_the_rollup_as_from_the_ledger(
    history: Any, org: Organisation, iris: ModelVersion, filters: dict[str, str]
) -> None:
    resolved = {k: {"org": org.pk, "iris": iris.model_id}[v] for k, v in filters.items()}
    live = _dashboard(**resolved)
    assert services.usage_rollup_refresh() > 0
    assert UsageRollupCursor.objects.get().rolled_through == timezone.localdate(timezone.now() - services.ROLLUP_GRACE)
    assert UsageRollup.objects.exists()
    rolled = _dashboard(**resolved)
    assert rolled["totals"] == live["totals"]
    assert rolled == live


def test_it_rolls_up_idempotently(history: Any) -> None:
    services.usage_rollup_refresh()
    first = list(
        UsageRollup.objects.order_by("day", "organisation_id", "model_version_id", "meter").values(
            "day", "meter", "calls", "units", "errors"
        )
    )
    call_command("usage_rollup", "--since", (timezone.localdate() - timedelta(days=30)).isoformat())
    again = list(
        UsageRollup.objects.order_by("day", "organisation_id", "model_version_id", "meter").values(
            "day", "meter", "calls", "units", "errors"
        )
    )
    assert first == again
    assert (
        sum(r["calls"] for r in again) == UsageRecord.objects.filter(created_at__date__lt=timezone.localdate()).count()
    )


def test_it_reads_percentiles_within_five_percent(history: list[float]) -> None:
    ordered = sorted(history)
    hist = latency.merge([{latency.bucket_of(v): 1} for v in history])
    for q, estimate in zip((0.5, 0.95, 0.99), latency.percentiles(hist, (0.5, 0.95, 0.99)), strict=True):
        exact = ordered[math.ceil(q * len(ordered)) - 1]
        assert estimate is not None
        assert abs(estimate - exact) / exact < 0.06


def test_it_buckets_latencies_the_same_in_the_database_and_in_python(history: Any) -> None:
    rows = UsageRecord.objects.annotate(b=latency.bucket_expression(), l=F("latency_ms")).values_list("b", "l")
    for bucket, value in rows:
        assert int(bucket) == latency.bucket_of(value)
    assert latency.bucket_of(0.0) == latency.bucket_of(latency.MIN_MS)
    assert isinstance(latency.bucket_expression().output_field, FloatField)


def test_it_exports_daily_aggregates_for_staff(staff_client: Any, history: Any) -> None:
    services.usage_rollup_refresh()
    response = staff_client.get("/staff/usage/export.csv")
    lines = b"".join(response.streaming_content).decode().strip().splitlines()
    assert lines[0].startswith("day,organisation,model_version,meter,calls")
    assert sum(int(line.split(",")[4]) for line in lines[1:]) == 300


def test_it_rolls_up_from_the_celery_task(history: Any) -> None:
    from portal.tasks import usage_rollup_refresh

    assert usage_rollup_refresh.run() >= 5
    assert usage_rollup_refresh.run() == 1  # only the last closed day again, for late rows


def test_it_says_every_day_is_live_before_the_first_rollup(staff_client: Any) -> None:
    text = " ".join(staff_client.get("/staff/").content.decode().split())
    assert "(never rolled up)" not in text
    assert "No day is rolled up yet: every day comes live from the ledger." in text


def test_the_latency_figures_describe_online_predictions_only(org: Organisation, iris: ModelVersion) -> None:
    when = timezone.now() - timedelta(days=2)
    for _ in range(10):
        _ledger(org, iris, when, 20.0)
    for face, meter in (("batch", "batch_rows"), ("bundle-download", "bundle_downloads")):
        for _ in range(30):  # the worker's batch rows and the downloads: ~0 ms, no call's latency
            UsageRecord.objects.create(
                request_id="req_" + uuid.uuid4().hex,
                organisation=org,
                face=face,
                meter=meter,
                model_version=iris,
                units=1,
                status_code=200,
                latency_ms=0.01,
                created_at=when,
            )
    for source in ("ledger", "rollup"):
        if source == "rollup":
            services.usage_rollup_refresh()
        (row,) = _dashboard()["versions"]
        assert row["calls"] == 70, source
        assert row["latency_avg"] == 20.0, source
        assert row["p50"] is not None and abs(row["p50"] - 20.0) / 20.0 < 0.06, source

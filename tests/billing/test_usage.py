import csv
import io
import json

import pytest

from billing.models import UsageRecord
from tests.billing.conftest import IRIS_ROW, account_on

pytestmark = pytest.mark.usefixtures("default_free_plan")


def predict(api, rows):
    assert api.post_json("/v1/models/iris:predict", {"instances": [IRIS_ROW] * rows}).status_code == 200


def test_it_prices_usage_per_bucket_at_the_plan_prices(api, org, iris):
    account_on(org, "payg")
    predict(api, 3)
    predict(api, 5)
    for group_by in ("day", "hour", "model", "key", "meter"):
        body = api.get(f"/v1/usage?group_by={group_by}").json()
        bucket = next(b for b in body["buckets"] if b["meters"])  # the others: this test's own GETs
        assert bucket["meters"]["online_predictions"] == {"units": 8, "amount": "0.004"}, group_by
    assert body["totals"]["amount"] == "0.004"
    assert body["estimate"]["total"] == "0"  # 0.4 cents: Stripe's invoice line rounds it to 0
    assert body["plan"] == "payg"


def test_it_estimates_free_usage_within_the_included_units_at_zero(api, iris):
    predict(api, 2)
    line = api.get("/v1/usage").json()["estimate"]["lines"]
    online = next(li for li in line if li["meter"] == "online_predictions")
    assert (online["units"], online["included_units"], online["billable_units"], online["amount"]) == (2, 1000, 0, "0")


def test_it_exports_the_ledger_rows_as_csv(api, iris):
    predict(api, 2)
    predict(api, 1)
    response = api.get("/v1/usage/export?format=csv")
    assert response.status_code == 200
    assert response.streaming
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [r["units"] for r in rows if r["face"] == "v1-predict"] == ["2", "1"]
    assert {r["request_id"] for r in rows} <= set(UsageRecord.objects.values_list("request_id", flat=True))
    assert rows[0]["model"] == "iris"


def test_it_exports_jsonl(api, iris):
    predict(api, 4)
    response = api.get("/v1/usage/export?format=jsonl")
    assert response["Content-Type"] == "application/x-ndjson"
    lines = [json.loads(line) for line in b"".join(response.streaming_content).splitlines()]
    assert lines[0]["units"] == 4
    assert lines[0]["report_id"] is None


def test_it_exports_only_the_callers_rows(api, client_for, other_key, iris):
    predict(api, 1)
    response = client_for(other_key).get("/v1/usage/export?format=jsonl")
    assert b"".join(response.streaming_content) == b""


def test_it_rejects_a_bad_export_period(api):
    response = api.get("/v1/usage/export?format=csv&start=2026-01-02T00:00:00Z&end=2026-01-01T00:00:00Z")
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "start"


def test_it_rejects_an_unknown_export_format(api):
    response = api.get("/v1/usage/export?format=xml")
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "format"


@pytest.mark.parametrize("path", ["/v1/usage", "/v1/usage/export?format=csv"])
def test_it_refuses_an_end_too_early_to_count_back_from(api, path):
    joiner = "&" if "?" in path else "?"
    response = api.get(f"{path}{joiner}end=0001-01-10T00:00:00Z")
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "end"


@pytest.mark.parametrize(
    ("group_by", "moved_by", "bucket_of"),
    [
        ("day", "days", lambda when: when.date().isoformat()),
        ("hour", "hours", lambda when: when.replace(minute=0, second=0, microsecond=0).isoformat()),
    ],
)
def test_day_and_hour_buckets_come_in_time_order(api, org, iris, group_by, moved_by, bucket_of):
    """Buckets holding only billed calls came after those holding an unbilled one (a 400), whatever
    their dates: the rows were ordered by meter alone."""
    from datetime import timedelta

    from django.utils import timezone

    predict(api, 1)
    predict(api, 1)
    assert api.post_json("/v1/models/iris:predict", {"instances": [[1.0]]}).status_code == 400  # meter ""
    now = (timezone.now() - timedelta(hours=1)).replace(minute=30)
    when = [now - timedelta(**{moved_by: back}) for back in (5, 3, 1)]  # the unbilled call is the newest
    for record, moment in zip(UsageRecord.objects.order_by("created_at"), when, strict=True):
        UsageRecord.objects.filter(pk=record.pk).update(created_at=moment)
    start = (now - timedelta(days=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
    buckets = api.get(f"/v1/usage?group_by={group_by}&start={start}").json()["buckets"]
    assert [b["bucket"] for b in buckets] == [bucket_of(moment) for moment in when]


def test_model_and_key_buckets_come_in_name_order(api, org, iris, diabetes):
    api.post_json("/v1/models/iris:predict", {"instances": [IRIS_ROW]})
    api.post_json("/v1/models/diabetes:predict", {"instances": [[0.0] * 10]})
    models = [b["model"] for b in api.get("/v1/usage?group_by=model").json()["buckets"] if b["model"]]
    assert models == sorted(models) == ["diabetes", "iris"]


def test_it_prices_usage_in_a_zero_decimal_currency_in_that_currencys_own_units(api, org, iris):
    """A plan in yen holds its prices in yen (Stripe's minor unit for jpy is the yen): 3 calls at 5 JPY
    read as 0.15 JPY in the usage and the estimate, while Stripe invoiced 15 JPY."""
    from billing.models import Plan, PlanPrice

    account_on(org, "payg")
    Plan.objects.filter(code="payg").update(currency="jpy")
    PlanPrice.objects.filter(plan__code="payg", meter="online_predictions").update(unit_amount_decimal=5)
    predict(api, 3)
    body = api.get("/v1/usage?group_by=meter").json()
    assert next(b for b in body["buckets"] if b["meters"])["amount"] == "15"
    online = next(li for li in body["estimate"]["lines"] if li["meter"] == "online_predictions")
    assert (online["unit_price"], online["amount"]) == ("5", "15")
    assert (body["estimate"]["total"], body["estimate"]["currency"]) == ("15", "jpy")


def test_it_estimates_each_line_rounded_to_the_cent_as_stripe_invoices_it(api, org, iris):
    """30 predictions at 0.05 cents are 1.5 cents, which Stripe invoices as 2 cents (its lines round half
    up); the estimate said 0.015 USD, and 0.5 cents of batch rows, invoiced as 1 cent, as 0.005."""
    account_on(org, "payg")
    for meter, units in (("online_predictions", 30), ("batch_rows", 50)):
        UsageRecord.objects.create(
            request_id=f"req_{meter}", organisation=org, meter=meter, units=units, status_code=200
        )
    estimate = api.get("/v1/usage").json()["estimate"]
    amounts = {li["meter"]: li["amount"] for li in estimate["lines"]}
    assert (amounts["online_predictions"], amounts["batch_rows"], estimate["total"]) == ("0.02", "0.01", "0.03")

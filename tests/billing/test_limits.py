from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone

from billing.models import UsageRecord
from tests.billing.conftest import IRIS_ROW, account_on, free_quota, key_limit
from tests.live import free_port

pytestmark = pytest.mark.usefixtures("default_free_plan")

PREDICT = "/v1/models/iris:predict"


def predict(api, rows=1, **extra):
    return api.post_json(PREDICT, {"instances": [IRIS_ROW] * rows}, **extra)


def test_it_sends_rate_limit_headers_on_every_response(api, iris):
    for response in (predict(api), api.get("/v1/usage"), api.get("/v1/models/nope")):
        assert response["RateLimit-Policy"] == '"default";q=60;w=60'
        assert response["RateLimit"].startswith('"default";r=')


def test_it_counts_down_the_remaining_calls(api, iris):
    first = int(predict(api)["RateLimit"].split("r=")[1].split(";")[0])
    second = int(predict(api)["RateLimit"].split("r=")[1].split(";")[0])
    assert second == first - 1


def test_it_answers_429_with_retry_after_past_the_rate_limit(api, api_key, iris):
    key_limit(api_key, rate_limit="2/day")
    assert predict(api).status_code == 200
    assert predict(api).status_code == 200
    response = predict(api)
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "rate_limited"
    assert int(response["Retry-After"]) >= 1
    assert response["RateLimit"].startswith('"default";r=0;')
    assert UsageRecord.objects.filter(status_code=429, units=0).count() == 1


def test_it_uses_the_plan_rate_limit(api, org, iris):
    account_on(org, "payg")
    assert predict(api)["RateLimit-Policy"] == '"default";q=1200;w=60'


def test_it_refuses_calls_past_the_free_quota_before_the_model_runs(api, iris):
    free_quota("online_predictions", 4)
    assert predict(api, rows=3).status_code == 200
    assert predict(api, rows=1).status_code == 200
    response = predict(api)
    assert response.status_code == 429
    body = response.json()["error"]
    assert (body["code"], body["type"]) == ("quota_exceeded", "rate_limit_error")
    assert int(response["Retry-After"]) > 0
    assert sum(UsageRecord.objects.values_list("units", flat=True)) == 4
    assert UsageRecord.objects.get(status_code=429).model_version_id is None  # the model never ran


@pytest.mark.parametrize("lease_units", [32, 1], ids=["from-a-lease", "each-call-in-redis"])
def test_a_call_whose_rows_do_not_fit_the_quota_is_refused_whole(api, iris, settings, lease_units):
    settings.BILLING_LEASE_UNITS = lease_units
    free_quota("online_predictions", 5)
    assert predict(api, rows=3).status_code == 200
    refused = predict(api, rows=3)  # 6 > 5: nothing of it runs or is billed
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "quota_exceeded"
    assert int(refused["Retry-After"]) > 0
    assert predict(api, rows=2).status_code == 200  # the refused call held nothing
    assert predict(api).status_code == 429
    assert sum(UsageRecord.objects.values_list("units", flat=True)) == 5


def test_a_refusal_does_not_say_the_quota_is_used_up_when_it_is_not(api, api_key, org, iris):
    """4 of 5 units left and a 5-row call refused: "used up" sent clients looking for usage that was not there."""
    free_quota("online_predictions", 5)
    assert predict(api).status_code == 200
    quota = predict(api, rows=5).json()["error"]["message"]
    account_on(org, "payg")
    key_limit(api_key, monthly_budget_units=3)
    budget = predict(api, rows=5).json()["error"]["message"]
    assert quota == "Not enough is left of your plan's monthly quota of 5 online_predictions units."
    assert budget == "Not enough is left of this API key's monthly budget of 3 units."


def test_a_call_whose_rows_pass_the_key_budget_is_refused_on_the_v2_face_too(api, api_key, org, iris):
    account_on(org, "payg")
    key_limit(api_key, monthly_budget_units=3)
    body = {"inputs": [{"name": "input", "shape": [4, 4], "datatype": "FP32", "data": IRIS_ROW * 4}]}
    refused = api.post_json("/v2/models/iris/infer", body)
    assert refused.status_code == 429
    assert "budget" in refused.json()["error"]
    assert predict(api, rows=3).status_code == 200
    assert sum(UsageRecord.objects.values_list("units", flat=True)) == 3


def test_it_does_not_cap_pay_as_you_go(api, org, iris):
    free_quota("online_predictions", 1)
    account_on(org, "payg")
    assert [predict(api, rows=2).status_code for _ in range(3)] == [200, 200, 200]


def test_it_refuses_calls_once_the_key_budget_is_spent(api, api_key, org, iris):
    account_on(org, "payg")
    key_limit(api_key, monthly_budget_units=2)
    assert predict(api, rows=2).status_code == 200
    response = predict(api)
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "budget_exceeded"


def test_a_budget_lowered_below_what_the_key_spent_refuses_its_next_call(api, api_key, org, iris):
    """The worker's lease, taken under the old budget of 1,000, went on granting units under the new one
    of 2 (its key names the counters, not their limits): three more calls passed a spent budget."""
    account_on(org, "payg")
    key_limit(api_key, monthly_budget_units=1000)
    assert [predict(api).status_code for _ in range(2)] == [200, 200]  # the second takes a lease
    key_limit(api_key, monthly_budget_units=2)  # as staff do on the admin's Key limits page
    assert [predict(api).status_code for _ in range(3)] == [429, 429, 429]
    assert sum(UsageRecord.objects.values_list("units", flat=True)) == 2


def test_a_quota_lowered_below_what_was_used_refuses_the_next_call(api, iris):
    free_quota("online_predictions", 1000)
    assert [predict(api).status_code for _ in range(2)] == [200, 200]  # the second takes a lease
    free_quota("online_predictions", 2)
    assert predict(api).status_code == 429
    assert sum(UsageRecord.objects.values_list("units", flat=True)) == 2


def test_it_releases_the_reservation_of_a_failed_call(api, iris):
    free_quota("online_predictions", 1)
    assert api.post_json(PREDICT, {"instances": [[1.0]]}).status_code == 400
    assert predict(api).status_code == 200


def test_it_answers_402_past_due_beyond_the_grace_period(api, org, iris):
    account_on(org, "payg", status="past_due", past_due_since=timezone.now() - timedelta(days=30))
    response = predict(api)
    assert response.status_code == 402
    assert response.json()["error"]["code"] == "payment_required"
    assert "POST /v1/billing/portal" in response.json()["error"]["message"]  # where the card is changed
    assert api.get("/v1/usage").status_code == 200  # reading usage is never blocked


def test_it_serves_past_due_accounts_within_the_grace_period(api, org, iris):
    account_on(org, "payg", status="past_due", past_due_since=timezone.now() - timedelta(days=1))
    assert predict(api).status_code == 200


def test_it_answers_402_once_cancelled(api, org, iris):
    account_on(org, "payg", status="canceled")
    response = predict(api)
    assert response.status_code == 402
    # Stripe's customer portal cannot revive a cancelled subscription: a new Checkout can
    assert "POST /v1/billing/checkout" in response.json()["error"]["message"]


def test_it_checks_quotas_in_the_database_when_redis_is_down(api, iris):
    free_quota("online_predictions", 2)
    with override_settings(BILLING_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0"):
        first = predict(api, rows=2)
        assert first.status_code == 200
        assert first["RateLimit-Policy"] == '"default";q=60;w=60'
        assert "RateLimit" not in first
        assert predict(api).json()["error"]["code"] == "quota_exceeded"
    assert UsageRecord.objects.filter(units=2).count() == 1
    free_quota("online_predictions", 4)
    with override_settings(BILLING_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0"):
        assert predict(api, rows=3).json()["error"]["code"] == "quota_exceeded"  # 2 + 3 > 4, from the ledger
        assert predict(api, rows=2).status_code == 200
    assert sum(UsageRecord.objects.values_list("units", flat=True)) == 4


def test_it_skips_every_check_with_metering_disabled(api, api_key, iris):
    key_limit(api_key, rate_limit="1/day")
    with override_settings(METERING_ENABLED=False):
        responses = [predict(api) for _ in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert "RateLimit-Policy" not in responses[0]
    assert UsageRecord.objects.filter(units=1).count() == 3


@pytest.mark.parametrize("path", ["/v2/models/iris/infer"])
def test_it_meters_the_v2_face_too(api, iris, path):
    free_quota("online_predictions", 0)
    body = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": IRIS_ROW}]}
    response = api.post_json(path, body)
    assert response.status_code == 429
    assert "quota" in response.json()["error"]

"""Workers lease blocks of rate, quota and budget units from Redis and spend them without a round trip."""

import time

import pytest

from apiservice.models import Organisation
from billing import limits
from billing.models import UsageRecord
from tests.billing.conftest import IRIS_ROW, free_quota, key_limit

pytestmark = pytest.mark.usefixtures("default_free_plan")

PREDICT = "/v1/models/iris:predict"


def predict(api):
    return api.post_json(PREDICT, {"instances": [IRIS_ROW]})


def quota_counter(org: Organisation) -> int:
    client = limits.link.client()
    assert client is not None
    return int(client.get(f"mm:q:{org.pk}:online_predictions:{limits._month_tag()}") or 0)


def billed_units() -> int:
    return sum(UsageRecord.objects.values_list("units", flat=True))


def as_two_workers(monkeypatch):
    """Two lease tables, as two worker processes would have; `use(i)` makes worker i's current."""
    tables = [limits._Leases(), limits._Leases()]

    def use(worker: int) -> None:
        monkeypatch.setattr(limits, "leases", tables[worker])

    return use


def test_a_worker_holds_a_block_of_quota_in_redis_and_spends_it_locally(api, org, iris, settings):
    settings.BILLING_LEASE_UNITS = 32
    free_quota("online_predictions", 100_000)
    assert predict(api).status_code == 200
    assert quota_counter(org) == 1  # seeded from the ledger, then one unit held exactly
    assert [predict(api).status_code for _ in range(5)] == [200] * 5
    assert billed_units() == 6
    assert quota_counter(org) == 1 + 32  # one block, taken by the second call; the next four spent it here


def test_near_the_cap_every_call_is_counted_in_redis(api, org, iris):
    free_quota("online_predictions", 20)  # less than 16 units of room per block: blocks of one
    for calls in range(1, 4):
        assert predict(api).status_code == 200
        assert quota_counter(org) == calls


def test_what_a_lease_left_unspent_goes_back_with_the_next_round_trip(api, org, iris, settings):
    settings.BILLING_LEASE_UNITS = 32
    settings.BILLING_LEASE_SECONDS = 0  # every lease expires at once: each call makes a round trip
    free_quota("online_predictions", 100_000)
    assert [predict(api).status_code for _ in range(2)] == [200, 200]
    assert quota_counter(org) == 1 + 32  # the seeding call's unit, the second call's block
    assert predict(api).status_code == 200
    assert quota_counter(org) == 3 + 31  # 31 units given back, then a new block for the third call


def test_a_failed_call_gives_its_unit_back_to_the_lease(api, org, iris, settings):
    settings.BILLING_LEASE_UNITS = 32
    free_quota("online_predictions", 100_000)
    assert predict(api).status_code == 200  # seeds the counter
    assert api.post_json(PREDICT, {"instances": [[1.0]]}).status_code == 400  # takes a block of 32
    assert [predict(api).status_code for _ in range(30)] == [200] * 30
    assert quota_counter(org) == 1 + 32
    assert billed_units() == 31  # and two units still held: the 400 spent none


def test_units_spent_from_a_lease_of_a_reseeded_counter_are_counted_again(api, org, iris, settings):
    settings.BILLING_LEASE_UNITS = 32
    settings.BILLING_LEASE_SECONDS = 0.3
    free_quota("online_predictions", 100_000)
    assert [predict(api).status_code for _ in range(2)] == [200, 200]  # a seed, then a block
    client = limits.link.client()
    key = f"mm:q:{org.pk}:online_predictions:{limits._month_tag()}"
    client.set(key, 2, ex=settings.BILLING_QUOTA_RESEED_SECONDS + 1)  # expired and seeded from the ledger
    assert predict(api).status_code == 200  # spent from the old lease: the new counter does not know
    time.sleep(0.35)
    assert predict(api).status_code == 200  # its round trip reports the two units the old lease spent
    assert quota_counter(org) == 2 + 2 + 32  # the seed, the old lease's two calls again, a new block
    assert billed_units() == 4


def test_two_workers_never_pass_the_cap_and_use_all_of_it_once_leases_come_back(
    api, api_key, iris, settings, monkeypatch
):
    key_limit(api_key, rate_limit="100000/hour")
    settings.BILLING_LEASE_UNITS = 32
    settings.BILLING_LEASE_SECONDS = 0.3
    free_quota("online_predictions", 100)
    use = as_two_workers(monkeypatch)
    statuses: list[int] = []
    for _attempt in range(3):
        while True:
            round_ = []
            for worker in (0, 1):
                use(worker)
                round_.append(predict(api).status_code)
            statuses += round_
            assert billed_units() <= 100
            if round_ == [429, 429]:
                break
        time.sleep(0.35)  # the leases expire; what they did not spend goes back with the next call
    assert billed_units() == 100
    assert statuses.count(200) == 100


def test_two_workers_never_let_a_key_past_its_rate_limit(api, api_key, iris, monkeypatch):
    key_limit(api_key, rate_limit="50/hour")
    use = as_two_workers(monkeypatch)
    statuses = []
    for call in range(60):
        use(call % 2)
        statuses.append(predict(api).status_code)
    assert statuses.count(200) == 50
    assert statuses[50:] == [429] * 10


def test_the_rate_limit_header_counts_down_by_one_while_a_lease_is_spent(api, api_key, iris):
    key_limit(api_key, rate_limit="1000/hour")  # blocks of 32
    remaining = [int(predict(api)["RateLimit"].split("r=")[1].split(";")[0]) for _ in range(5)]
    assert remaining == [999, 998, 997, 996, 995]


def test_one_block_size_counts_every_call_in_redis(api, org, iris, settings):
    settings.BILLING_LEASE_UNITS = 1
    free_quota("online_predictions", 100_000)
    for calls in range(1, 4):
        assert predict(api).status_code == 200
        assert quota_counter(org) == calls


def test_a_rate_limited_call_still_gives_back_what_the_last_lease_left(api, api_key, org, iris, settings):
    settings.BILLING_LEASE_UNITS = 32
    settings.BILLING_LEASE_SECONDS = 0  # every quota lease expires at once: each call reports the last
    free_quota("online_predictions", 100_000)
    key_limit(api_key, rate_limit="3/hour")  # blocks of one: every call reaches Redis
    assert [predict(api).status_code for _ in range(3)] == [200, 200, 200]
    assert quota_counter(org) == 3 + 31  # the third call's block, 31 of it unspent
    assert predict(api).status_code == 429
    assert quota_counter(org) == 3  # the refused call's round trip gave the 31 back
    assert billed_units() == 3


@pytest.mark.parametrize(
    ("moment", "tag"),
    [
        ("2026-11-30T23:59:59.999", "202611"),
        ("2026-12-01T00:00:00", "202612"),
        ("2026-12-31T23:59:59.5", "202612"),
        ("2027-01-01T00:00:00", "202701"),
        ("2026-11-15T12:00:00", "202611"),  # back in time: a cached month is not reused outside its bounds
    ],
)
def test_the_counters_month_follows_the_utc_calendar_at_its_edges(monkeypatch, moment, tag):
    from datetime import UTC, datetime

    now = datetime.fromisoformat(moment).replace(tzinfo=UTC).timestamp()
    monkeypatch.setattr(limits.time, "time", lambda: now)
    assert limits._month_tag() == tag
    assert limits.month_start(datetime.fromtimestamp(now, UTC)).strftime("%Y%m") == tag

"""Bundle downloads count against the plan's monthly cap (free: 10) and the key's budget, when billed."""

import threading
import time
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.db import connections
from django.db.models import Sum

from apiservice.models import Organisation
from billing import limits
from billing.models import UsageRecord
from edge.models import Bundle
from edge.services import bundle_build
from tests.billing.conftest import _fresh_billing_caches, account_on, free_quota, key_limit  # noqa: F401
from tests.conftest import APIClient

FREE_DOWNLOADS = 10  # billing/catalog.py: the free plan's bundle_downloads per month


@pytest.fixture
def free_org(org: Organisation) -> Organisation:
    account_on(org, "free")
    return org


def _ready(api: APIClient) -> str:
    response = api.post_json("/v1/models/iris/versions/1/bundles", {"variants": ["fp32"]})
    bundle = Bundle.objects.get(public_id=response.json()["id"])
    bundle_build(bundle_id=bundle.pk)
    # A live Celery worker started by another test of this session may have claimed the build first
    # (the request queues it on commit): then this call left it to that worker. Wait for either.
    deadline = time.monotonic() + 60
    while Bundle.objects.get(pk=bundle.pk).status != Bundle.Status.READY:
        assert time.monotonic() < deadline, "the bundle was not built"
        time.sleep(0.1)
    return response.json()["id"]


def _url(api: APIClient, bundle_id: str) -> str:
    response = api.get(f"/v1/bundles/{bundle_id}/download")
    assert response.status_code == 200, response.content
    parts = urlsplit(response.json()["url"])
    return f"{parts.path}?{parts.query}"


def _downloads_billed() -> tuple[int, int]:
    rows = UsageRecord.objects.filter(meter="bundle_downloads", units__gt=0)
    return rows.count(), rows.aggregate(units=Sum("units"))["units"] or 0


def _assert_quota_refusal(response: Any, code: str = "quota_exceeded") -> None:
    assert response.status_code == 429
    assert response.json()["error"]["code"] == code
    assert 0 < int(response["Retry-After"]) <= limits.seconds_to_next_month()


def test_it_refuses_the_eleventh_download_of_the_month_on_the_free_plan(api, free_org, iris):
    bundle_id = _ready(api)
    urls = [_url(api, bundle_id) for _ in range(FREE_DOWNLOADS + 1)]  # issued while the quota is unused
    for url in urls[:FREE_DOWNLOADS]:
        response = APIClient().get(url)
        assert response.status_code == 200
        b"".join(response.streaming_content)
    refused = APIClient().get(urls[-1])
    _assert_quota_refusal(refused)
    assert refused["Content-Type"] == "application/json"
    assert _downloads_billed() == (FREE_DOWNLOADS, FREE_DOWNLOADS)
    _assert_quota_refusal(api.get(f"/v1/bundles/{bundle_id}/download"))  # and no new URL is issued


def test_it_holds_no_quota_for_head_not_modified_or_unsatisfiable_requests(api, free_org, iris):
    free_quota("bundle_downloads", 1)
    bundle_id = _ready(api)
    url = _url(api, bundle_id)
    etag = APIClient().head(url)["ETag"]
    assert APIClient().get(url, HTTP_IF_NONE_MATCH=etag).status_code == 304
    assert APIClient().get(url, HTTP_RANGE="bytes=999999999-").status_code == 416
    assert _downloads_billed() == (0, 0)
    assert APIClient().get(url, HTTP_RANGE="bytes=0-9").status_code == 206  # the month's one download
    assert APIClient().get(url, HTTP_RANGE="bytes=10-").status_code == 206  # its resume: paid for already
    assert APIClient().get(url).status_code == 200
    assert _downloads_billed() == (1, 1)
    _assert_quota_refusal(api.get(f"/v1/bundles/{bundle_id}/download"))


def test_it_serves_and_bills_once_parallel_ranges_of_one_url_at_the_last_unit(transactional_db, api, free_org, iris):
    free_quota("bundle_downloads", 1)
    url = _url(api, _ready(api))
    ranges = [f"bytes={start}-{start + 99}" for start in range(0, 800, 100)]
    start = threading.Barrier(len(ranges))
    statuses: list[int] = []
    answers: list[object] = []  # what each request got, to say why if one was not a 206

    def fetch(byte_range: str) -> None:
        try:
            start.wait(timeout=30)
            response = APIClient().get(url, HTTP_RANGE=byte_range)
            statuses.append(response.status_code)
            answers.append((response.status_code, response.get("Content-Type")))
        except Exception as exc:
            answers.append(repr(exc))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=fetch, args=(byte_range,)) for byte_range in ranges]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert statuses == [206] * len(ranges), answers
    assert _downloads_billed() == (1, 1)


def test_it_refuses_a_download_past_the_keys_monthly_budget(api, api_key, iris):
    key_limit(api_key, monthly_budget_units=1)
    bundle_id = _ready(api)
    first, second = _url(api, bundle_id), _url(api, bundle_id)
    assert APIClient().get(first).status_code == 200
    _assert_quota_refusal(APIClient().get(second), code="budget_exceeded")
    assert _downloads_billed() == (1, 1)


def test_it_neither_holds_nor_refuses_with_metering_off(api, free_org, iris, settings):
    settings.METERING_ENABLED = False
    free_quota("bundle_downloads", 1)
    bundle_id = _ready(api)
    for _ in range(2):
        assert APIClient().get(_url(api, bundle_id)).status_code == 200
    assert _downloads_billed() == (2, 2)  # the ledger still records


def test_a_cancelled_account_gets_neither_a_download_url_nor_the_bytes_of_one_it_holds(api, org, iris):
    account_on(org, "payg")
    bundle_id = _ready(api)
    url = _url(api, bundle_id)
    account_on(org, "payg", status="canceled")
    for response in (api.get(f"/v1/bundles/{bundle_id}/download"), api.get(url)):
        assert response.status_code == 402
        assert response.json()["error"]["code"] == "payment_required"
    assert not UsageRecord.objects.filter(face="bundle-download").exists()

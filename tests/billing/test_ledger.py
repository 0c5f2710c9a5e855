import json
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from django.utils import timezone

from billing.models import UsageRecord


@pytest.mark.live
def test_the_ledger_counts_exactly_the_responses_of_a_concurrent_burst(transactional_db, live_gunicorn, api_key, iris):
    good = json.dumps({"instances": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}).encode()
    bad = json.dumps({"instances": [[1.0]]}).encode()

    def call(i: int) -> tuple[int, str]:
        request = urllib.request.Request(
            live_gunicorn.url + "/v1/models/iris:predict",
            data=bad if i % 5 == 0 else good,
            headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.headers["X-Request-Id"]
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers["X-Request-Id"]

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(call, range(200)))

    statuses = [status for status, _ in results]
    assert statuses.count(200) == 160 and statuses.count(400) == 40
    rows = UsageRecord.objects.filter(face="v1-predict")
    assert rows.count() == len(results)
    assert set(rows.values_list("request_id", flat=True)) == {request_id for _, request_id in results}
    assert sum(rows.values_list("units", flat=True)) == 160 * 2


def test_the_usage_summary_groups_by_day_model_and_key(api, iris, diabetes):
    api.post_json("/v1/models/iris:predict", {"instances": [[5.1, 3.5, 1.4, 0.2]] * 3})
    api.post_json("/v1/models/diabetes:predict", {"instances": [[0.0] * 10]})
    api.post_json("/v1/models/diabetes:predict", {"instances": [[0.0]]})
    by_model = api.get("/v1/usage", {"group_by": "model"}).json()
    units = {(b["model"], b["version"]): (b["calls"], b["units"], b["errors"]) for b in by_model["buckets"]}
    assert units[("iris", 1)] == (1, 3, 0)
    assert units[("diabetes", 1)] == (2, 1, 1)
    by_day = api.get("/v1/usage", {"group_by": "day"}).json()
    assert by_day["buckets"][0]["bucket"] == timezone.now().date().isoformat()
    assert by_day["totals"]["units"] == 4


def test_the_usage_summary_rejects_a_bad_range(api):
    now = timezone.now()
    response = api.get("/v1/usage", {"start": now.isoformat(), "end": (now - timedelta(days=1)).isoformat()})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "start"
    assert api.get("/v1/usage", {"group_by": "planet"}).status_code == 400

"""The gateway's fast route for online inference answers exactly as the DRF views would.

Plain JSON calls take the fast route; a `?format=` query or an explicit non-JSON `Accept` goes
through DRF. Both must give the same body, headers, errors and ledger rows.
"""

from typing import Any

import pytest

from apiservice import services as org_services
from billing.models import UsageRecord

ROW = {"instances": [[5.1, 3.5, 1.4, 0.2]]}
INFER = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}]}


@pytest.mark.parametrize("accept", [None, "*/*", "application/json", "application/json; q=0.9, */*; q=0.1"])
def test_it_answers_json_for_json_friendly_accepts(api: Any, iris: Any, accept: str | None) -> None:
    extra = {"HTTP_ACCEPT": accept} if accept else {}
    response = api.post_json("/v1/models/iris:predict", ROW, **extra)
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/json"
    assert response.json()["model_version"] == "1"


def test_it_still_refuses_an_unacceptable_accept_with_406(api: Any, iris: Any) -> None:
    response = api.post_json("/v1/models/iris:predict", ROW, HTTP_ACCEPT="text/html")
    assert response.status_code == 406
    assert response.json()["error"]["code"]


@pytest.mark.parametrize("path", ["/v1/models/iris:predict", "/v2/models/iris/infer"])
def test_a_format_no_renderer_offers_is_a_406_not_a_404_about_the_model(api: Any, iris: Any, path: str) -> None:
    """`?format=xml` was DRF's 404 "Not found." for a model that exists."""
    response = api.post_json(f"{path}?format=xml", INFER if path.startswith("/v2") else ROW)
    assert response.status_code == 406
    error = response.json()["error"]
    assert "format" in (error if isinstance(error, str) else error["message"])


def test_it_answers_v2_infer_with_and_without_accept(api: Any, iris: Any) -> None:
    for extra in ({}, {"HTTP_ACCEPT": "*/*"}):
        response = api.post_json("/v2/models/iris/infer", INFER, **extra)
        assert response.status_code == 200, response.content
        assert response.json()["model_version"] == "1"


def _comparable(response: Any) -> tuple[int, Any, str, str]:
    return response.status_code, response.json(), response["Content-Type"], response["X-Model-Version"]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/models/iris:predict", ROW),
        ("/v1/models/iris/versions/1:predict", ROW),
        ("/v1/models/iris/labels/production:predict", ROW),
        ("/v2/models/iris/infer", INFER),
        ("/v2/models/iris/versions/production/infer", INFER),
    ],
)
def test_the_fast_route_and_drf_give_the_same_answer_and_ledger_row(api: Any, iris: Any, path: str, body: Any) -> None:
    fast = api.post_json(path, body)
    through_drf = api.post_json(f"{path}?format=json", body)
    assert _comparable(fast) == _comparable(through_drf)
    assert fast["X-Request-Id"] != through_drf["X-Request-Id"]
    rows = list(UsageRecord.objects.order_by("created_at").values_list("face", "units", "status_code", "meter"))
    assert len(rows) == 2
    assert rows[0] == rows[1]
    assert rows[0][1:3] == (1, 200)


@pytest.mark.parametrize("query", ["", "?format=json"])
def test_errors_are_the_same_envelope_either_way(api: Any, iris: Any, query: str) -> None:
    bad = api.post_json(f"/v1/models/iris:predict{query}", {"instances": [[1.0, 2.0]]})
    assert bad.status_code == 400
    assert bad.json()["error"]["param"].startswith("instances")
    missing = api.post_json(f"/v1/models/nope:predict{query}", ROW)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "model_not_found"
    v2 = api.post_json(f"/v2/models/iris/infer{query}", {"inputs": "nope"})
    assert v2.status_code == 400
    assert set(v2.json()) == {"error"}
    assert isinstance(v2.json()["error"], str)


@pytest.mark.parametrize("query", ["", "?format=json"])
def test_no_key_a_bad_key_and_a_key_without_the_scope_are_refused_either_way(
    client_for: Any, org: Any, iris: Any, query: str
) -> None:
    path = f"/v1/models/iris:predict{query}"
    anonymous = client_for().post_json(path, ROW)
    assert anonymous.status_code == 401
    assert anonymous["WWW-Authenticate"].startswith("Bearer")
    assert anonymous.json()["error"]["code"] == "invalid_api_key"
    wrong = client_for("mm_AAAAAAAA." + "B" * 32).post_json(path, ROW)
    assert wrong.status_code == 401
    assert wrong.json()["error"]["message"] == "Invalid or revoked API key."
    _, batch_only = org_services.api_key_create(organisation=org, name="batch only", scopes=["batch"])
    refused = client_for(batch_only).post_json(path, ROW)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "insufficient_scope"
    assert "'predict'" in refused.json()["error"]["message"]


def test_the_fast_route_checks_the_host_header_like_the_rest_of_the_site(api: Any, iris: Any) -> None:
    response = api.post_json("/v1/models/iris:predict", ROW, HTTP_HOST="evil.example.org")
    assert response.status_code == 400
    assert not UsageRecord.objects.filter(status_code=200).exists()


@pytest.mark.parametrize(
    ("path", "body"),
    [("/v1/models/iris:predict", ROW), ("/v2/models/iris/infer", INFER)],
    ids=[":predict", "v2 infer"],
)
def test_warm_calls_reach_the_database_only_for_their_ledger_rows(api: Any, iris: Any, path: str, body: Any) -> None:
    """The key, the version and the plan terms come from per-process caches (1-5 s), so a burst of
    calls costs no ORM query per call: only a cache refreshed once in the burst may query."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    assert api.post_json(path, body).status_code == 200  # warms the caches and the ONNX Runtime session
    with CaptureQueriesContext(connection) as queries:
        for _ in range(20):
            assert api.post_json(path, body).status_code == 200
    assert len(queries) <= 8, [query["sql"][:120] for query in queries]  # the ledger INSERT is not an ORM query
    assert UsageRecord.objects.filter(status_code=200).count() == 21

"""Usage pages, the latest-calls htmx endpoint and CSV exports show only the organisation's own calls."""

from typing import Any

from django.test import Client

from tests.conftest import APIClient

IRIS_ROW = {"instances": [[5.1, 3.5, 1.4, 0.2]]}


def _call(key: str, times: int = 1) -> None:
    for _ in range(times):
        assert APIClient(key).post_json("/v1/models/iris:predict", IRIS_ROW).status_code == 200


def test_it_counts_only_the_organisations_calls(owner_client: Client, api_key: str, other_key: str, iris: Any) -> None:
    _call(api_key, 2)
    _call(other_key, 3)
    response = owner_client.get("/portal/usage/")
    assert response.context["d"]["totals"]["calls"] == 2


def test_it_lists_only_the_organisations_latest_calls(
    owner_client: Client, api_key: str, other_key: str, iris: Any
) -> None:
    _call(api_key)
    _call(other_key)
    response = owner_client.get("/portal/usage/calls/", HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    assert len(response.context["calls"]) == 1
    assert api_key.split(".")[0].encode() in response.content
    assert other_key.split(".")[0].encode() not in response.content


def test_it_exports_only_the_organisations_calls(owner_client: Client, api_key: str, other_key: str, iris: Any) -> None:
    _call(api_key)
    _call(other_key, 2)
    response = owner_client.get("/portal/usage/export.csv")
    lines = b"".join(response.streaming_content).decode().strip().splitlines()
    assert response["Content-Type"].startswith("text/csv")
    assert lines[0].startswith("created_at,request_id")
    assert len(lines) == 2
    assert "iris" in lines[1]


def test_it_lists_only_visible_models(owner_client: Client, iris: Any, private_model: Any) -> None:
    content = owner_client.get("/portal/models/").content
    assert b"iris" in content
    assert b"secret-iris" not in content


def test_it_shows_staff_every_organisation_and_filters_by_one(
    staff_client: Client, api_key: str, other_key: str, iris: Any, org: Any
) -> None:
    _call(api_key)
    _call(other_key, 2)
    everything = staff_client.get("/staff/")
    assert everything.context["d"]["totals"]["calls"] == 3
    assert {c["name"] for c in everything.context["d"]["top_customers"]} == {"Acme Robotics", "Globex"}
    one = staff_client.get("/staff/", {"organisation": org.pk})
    assert one.context["d"]["totals"]["calls"] == 1

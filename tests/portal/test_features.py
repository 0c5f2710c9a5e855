"""Plug-in slots: pages from other apps appear in the navigation only once their app and URL exist."""

import re
from typing import Any

import pytest
from django.test import Client, RequestFactory

from portal import context_processors


def test_it_hides_slots_whose_app_or_url_is_missing(monkeypatch: pytest.MonkeyPatch, db: Any) -> None:
    monkeypatch.setitem(context_processors.FEATURE_SLOTS, "not_installed", ("no_such_app", "portal-batches"))
    monkeypatch.setitem(context_processors.FEATURE_SLOTS, "no_url", ("portal", "no-such-url-name"))
    features = context_processors.features(RequestFactory().get("/portal/"))["features"]
    assert set(features) == set(context_processors.FEATURE_SLOTS)
    assert features["not_installed"] is None and features["no_url"] is None


def test_it_shows_a_slot_once_its_url_name_resolves(monkeypatch: pytest.MonkeyPatch, owner_client: Client) -> None:
    monkeypatch.setitem(context_processors.FEATURE_SLOTS, "batch_jobs", ("portal", "portal:usage"))
    response = owner_client.get("/portal/")
    assert response.context["features"]["batch_jobs"] == "/portal/usage/"
    assert b">Batch jobs</a>" in response.content


def test_it_shows_every_plug_in_entry_once_batches_edge_and_billing_are_merged(
    owner_client: Client, staff_client: Client
) -> None:
    content = owner_client.get("/portal/").content
    for label in (b">Batch jobs<", b">Edge bundles<", b">Billing<"):
        assert label in content
    staff = staff_client.get("/staff/").content
    assert b">Bundle builds<" in staff and b">Billing health<" in staff


@pytest.mark.parametrize(
    ("url", "entry"),
    [
        ("/portal/", "Overview"),
        ("/portal/keys/", "API keys"),
        ("/portal/usage/", "Usage"),
        ("/portal/models/iris/", "Models"),
        ("/portal/team/", "Team"),
        ("/portal/batches/", "Batch jobs"),
        ("/portal/bundles/", "Edge bundles"),
        ("/portal/billing/", "Billing"),
    ],
)
def test_the_navigation_marks_the_current_page_for_screen_readers(
    owner_client: Client, iris: Any, url: str, entry: str
) -> None:
    page = owner_client.get(url).content.decode()
    current = re.findall(r'<a href="[^"]*" aria-current="page">([^<]*)</a>', page)
    assert current == [entry]

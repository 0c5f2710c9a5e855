"""Plug-in slots: pages from other apps appear in the navigation only once their app and URL exist."""

from typing import Any

import pytest
from django.test import Client, RequestFactory

from portal import context_processors


def test_it_hides_slots_whose_app_or_url_is_missing(db: Any) -> None:
    features = context_processors.features(RequestFactory().get("/portal/"))["features"]
    assert set(features) == set(context_processors.FEATURE_SLOTS)
    assert all(url is None for key, url in features.items() if key not in {"billing"})


def test_it_shows_a_slot_once_its_url_name_resolves(monkeypatch: pytest.MonkeyPatch, owner_client: Client) -> None:
    monkeypatch.setitem(context_processors.FEATURE_SLOTS, "batch_jobs", ("portal", "portal:usage"))
    response = owner_client.get("/portal/")
    assert response.context["features"]["batch_jobs"] == "/portal/usage/"
    assert b">Batch jobs</a>" in response.content


def test_it_shows_no_plug_in_entries_on_this_branch(owner_client: Client) -> None:
    content = owner_client.get("/portal/").content
    for label in (b"Batch jobs", b"Edge bundles", b">Billing<"):
        assert label not in content

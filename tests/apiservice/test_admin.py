"""The API key admin: keys made there have real scopes, and their secret is shown once."""

import re
from typing import Any

import pytest
from django.contrib.messages import get_messages
from django.test import Client

from apiservice.models import APIKey, Organisation

ADD = "/admin/apiservice/apikey/add/"


@pytest.mark.parametrize("scopes", [["bogus"], ["predict", "5"], []])
def test_it_refuses_unknown_or_no_scopes_when_staff_add_a_key(
    admin_client: Client, org: Organisation, scopes: list[str]
) -> None:
    response = admin_client.post(ADD, {"name": "by hand", "organisation": org.pk, "scopes": scopes})
    assert response.status_code == 200  # the form again, with the error
    assert response.context["adminform"].form.errors["scopes"]
    assert not APIKey.objects.filter(name="by hand").exists()


def test_it_adds_a_key_with_the_chosen_scopes_and_shows_its_secret_once(admin_client: Client, org: Any) -> None:
    response = admin_client.post(ADD, {"name": "by hand", "organisation": org.pk, "scopes": ["predict", "usage"]})
    key = APIKey.objects.get(name="by hand")
    assert key.scopes == ["predict", "usage"]
    page = response.content.decode()
    assert response.status_code == 200 and "no-store" in response["Cache-Control"]
    assert "you will not be able to see it again" in page
    secret = re.search(r'value="(mm_[^"]+)"', page).group(1)  # type: ignore[union-attr]
    assert APIKey.objects.get_from_key(secret) == key
    # Not kept anywhere for a later page: no message (Django stores messages in a cookie, or the session)
    assert not list(get_messages(response.wsgi_request))  # type: ignore[attr-defined]
    assert all(secret not in morsel.value for morsel in admin_client.cookies.values())
    assert secret not in admin_client.get("/admin/apiservice/apikey/").content.decode()
    change = admin_client.get(f"/admin/apiservice/apikey/{key.pk}/change/".replace("_", "_5F")).content.decode()
    checked = re.findall(r'name="scopes" value="(\w+)"[^>]*checked', change)
    assert checked == ["predict", "usage"]


def _change_form(key: APIKey, **overrides: Any) -> dict[str, Any]:
    """The API key change form as the admin posts it (all scopes ticked, no expiry)."""
    return {"name": key.name, "organisation": key.organisation_id, "scopes": key.scopes, **overrides}


def test_it_stamps_and_enforces_a_revocation_made_in_the_admin(admin_client: Client, api, api_key: str) -> None:
    key = APIKey.objects.get_from_key(api_key)
    change = f"/admin/apiservice/apikey/{key.pk}/change/".replace("_", "_5F")
    response = admin_client.post(change, _change_form(key, revoked="on"))
    assert response.status_code == 302
    key.refresh_from_db()
    assert key.revoked
    assert key.revoked_at is not None
    assert api.get("/v1/models").status_code == 401


def test_it_keeps_the_revocation_and_last_use_times_read_only(admin_client: Client, api_key: str) -> None:
    key = APIKey.objects.get_from_key(api_key)
    change = f"/admin/apiservice/apikey/{key.pk}/change/".replace("_", "_5F")
    admin_client.post(change, _change_form(key, revoked="on"))
    revoked_at = APIKey.objects.get(pk=key.pk).revoked_at
    backdated = {"revoked_at_0": "2020-01-01", "revoked_at_1": "00:00:00", "last_used_at_0": "2020-01-01"}
    response = admin_client.post(change, _change_form(key, **backdated))
    assert response.status_code == 302
    key.refresh_from_db()
    assert (key.revoked, key.last_used_at) == (True, None)
    assert key.revoked_at == revoked_at is not None


def test_it_offers_staff_only_the_organisation_api_keys(admin_client: Client) -> None:
    index = admin_client.get("/admin/").content.decode()
    assert "/admin/apiservice/apikey/" in index
    assert "/admin/rest_framework_api_key/" not in index
    assert admin_client.get("/admin/rest_framework_api_key/apikey/add/").status_code == 404


@pytest.mark.parametrize(
    "path",
    [
        "apiservice/apikey/%00/change",
        "apiservice/apikey/%00/delete",
        "apiservice/apikey/%00/history",
        "billing/usagereport/%00/change",  # reports are never deleted (no delete view)
        "billing/usagereport/%00/history",
    ],
)
def test_an_admin_id_holding_a_nul_byte_is_no_object_not_a_500(admin_client: Client, path: str) -> None:
    response = admin_client.get(f"/admin/{path}/")
    assert response.status_code == 302  # to the admin index, "doesn't exist"

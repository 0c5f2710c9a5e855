"""The API key admin: keys made there have real scopes, and their secret is shown once."""

import re
from typing import Any

import pytest
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
    response = admin_client.post(
        ADD, {"name": "by hand", "organisation": org.pk, "scopes": ["predict", "usage"]}, follow=True
    )
    key = APIKey.objects.get(name="by hand")
    assert key.scopes == ["predict", "usage"]
    assert "you will not be able to see it again" in response.content.decode()
    change = admin_client.get(f"/admin/apiservice/apikey/{key.pk}/change/".replace("_", "_5F")).content.decode()
    checked = re.findall(r'name="scopes" value="(\w+)"[^>]*checked', change)
    assert checked == ["predict", "usage"]

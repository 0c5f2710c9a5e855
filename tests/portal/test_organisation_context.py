"""A page acts on the organisation it shows: a form from a tab left open on one organisation, posted
after switching to another in a second tab, does nothing and says so (it used to act on the other one)."""

from typing import Any

import pytest
from django.test import Client

from apiservice.models import APIKey, Membership, Organisation
from apiservice.services import membership_ensure

from .conftest import client_as, record_calls


@pytest.fixture
def switched_client(owner: Any, org: Organisation, other_org: Organisation) -> Client:
    """Olivia owns `org` and is a member of `other_org`; her session has just switched to `other_org`."""
    membership_ensure(user=owner, organisation=other_org, role=Membership.Role.MEMBER)
    client = client_as(owner)
    client.post("/portal/organisation/switch/", {"organisation": other_org.pk})
    return client


def test_a_form_shown_for_another_organisation_does_nothing_and_says_which(
    switched_client: Client, org: Organisation, other_org: Organisation
) -> None:
    response = switched_client.post(
        "/portal/keys/", {"name": "meant for Acme", "scopes": ["predict"], "portal_organisation": org.pk}
    )
    assert response.status_code == 409
    assert "Acme Robotics" in response.content.decode()
    assert "Globex" in response.content.decode()
    assert not APIKey.objects.filter(name="meant for Acme").exists()


def test_an_htmx_action_from_a_page_of_another_organisation_does_nothing(
    switched_client: Client, org: Organisation
) -> None:
    response = switched_client.post(
        "/portal/keys/",
        {"name": "meant for Acme", "scopes": ["predict"]},
        HTTP_HX_REQUEST="true",
        HTTP_X_PORTAL_ORGANISATION=str(org.pk),
    )
    assert response.status_code == 409
    assert "another tab" in response.content.decode()
    assert not APIKey.objects.filter(name="meant for Acme").exists()


def test_a_form_shown_for_the_current_organisation_still_works(
    switched_client: Client, other_org: Organisation
) -> None:
    response = switched_client.post(
        "/portal/keys/", {"name": "for Globex", "scopes": ["predict"], "portal_organisation": other_org.pk}
    )
    assert response.status_code == 200
    assert APIKey.objects.get(name="for Globex").organisation_id == other_org.pk


@pytest.mark.parametrize("url", ["/portal/keys/", "/portal/team/", "/portal/batches/", "/portal/bundles/"])
def test_every_portal_page_says_which_organisation_its_forms_are_for(
    owner_client: Client, org: Organisation, url: str
) -> None:
    content = owner_client.get(url).content.decode()
    assert f'name="portal_organisation" value="{org.pk}"' in content
    assert f'"X-Portal-Organisation": "{org.pk}"' in content  # htmx requests (Revoke, Refresh, polling)


def test_its_buttons_stay_short_for_a_long_organisation_name(
    switched_client: Client, org: Organisation, other_org: Organisation
) -> None:
    Organisation.objects.filter(pk=other_org.pk).update(name="Globex " + "x" * 150)
    response = switched_client.post(
        "/portal/keys/", {"name": "k", "scopes": ["predict"], "portal_organisation": org.pk}
    )
    content = response.content.decode()
    assert "x" * 150 in content  # named in full in the sentence
    assert "Stay in Globex " + "x" * 150 not in content  # a button 150 characters wide overflows the page


@pytest.mark.parametrize("url", ["/portal/keys/", "/portal/usage/", "/portal/batches/", "/portal/billing/"])
def test_every_portal_page_names_the_organisation_it_shows(switched_client: Client, url: str) -> None:
    """With two organisations, a page of keys or usage has to say whose they are."""
    content = switched_client.get(url).content.decode()
    assert '<span class="current-org" data-testid="current-organisation">Globex</span>' in content


@pytest.mark.parametrize("shown", ["²", "9" * 30, "9" * 5000])
def test_a_garbled_organisation_field_is_refused_as_another_organisation_not_a_server_error(
    owner_client: Client, shown: str
) -> None:
    """'²' passes str.isdigit() but not int(); 5,000 digits pass neither int() nor the database's integers."""
    form = owner_client.post("/portal/keys/", {"name": "k", "scopes": ["predict"], "portal_organisation": shown})
    htmx = owner_client.post(
        "/portal/keys/", {"name": "k", "scopes": ["predict"]}, HTTP_HX_REQUEST="true", HTTP_X_PORTAL_ORGANISATION=shown
    )
    assert (form.status_code, htmx.status_code) == (409, 409)
    assert not APIKey.objects.filter(name="k").exists()


def test_refreshing_a_table_on_a_page_of_another_organisation_reloads_the_page_instead_of_mixing_them(
    switched_client: Client, org: Organisation, other_org: Organisation, iris: Any
) -> None:
    """*Refresh* on Acme's usage page, after switching to Globex in another tab, swapped Globex's calls
    into the page that still said Acme everywhere else."""
    (globex_call,) = record_calls(other_org, iris)
    response = switched_client.get(
        "/portal/usage/calls/", HTTP_HX_REQUEST="true", HTTP_X_PORTAL_ORGANISATION=str(org.pk)
    )
    assert response["HX-Refresh"] == "true"  # the page reloads, on Globex, saying so
    assert globex_call not in response.content.decode()
    current = switched_client.get(
        "/portal/usage/calls/", HTTP_HX_REQUEST="true", HTTP_X_PORTAL_ORGANISATION=str(other_org.pk)
    )
    assert globex_call in current.content.decode()


def test_the_export_link_of_a_page_of_another_organisation_exports_nothing_rather_than_the_other_ones_calls(
    switched_client: Client, org: Organisation, other_org: Organisation, iris: Any
) -> None:
    """*Export calls (CSV)* on Acme's usage page, after switching to Globex in another tab, downloaded
    Globex's calls, in a file that names neither."""
    page = switched_client.get("/portal/usage/?start=2026-11-01").content.decode()
    assert f'href="/portal/usage/export.csv?start=2026-11-01&amp;portal_organisation={other_org.pk}"' in page
    (globex_call,) = record_calls(other_org, iris)
    stale = switched_client.get(f"/portal/usage/export.csv?portal_organisation={org.pk}")
    assert stale.status_code == 409
    assert globex_call not in stale.content.decode()
    current = switched_client.get(f"/portal/usage/export.csv?portal_organisation={other_org.pk}")
    assert globex_call in b"".join(current.streaming_content).decode()

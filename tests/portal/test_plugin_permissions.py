"""Permissions on the batch, bundle and billing pages: anonymous, no organisation, member, owner, staff."""

import re
from typing import Any

import pytest
from django.test import Client

from tests.portal.conftest import client_as, make_user

PORTAL_GETS = ["/portal/batches/", "/portal/bundles/", "/portal/billing/"]
PORTAL_POSTS = [
    "/portal/batches/",
    "/portal/bundles/",
    "/portal/billing/checkout/",
    "/portal/billing/manage/",
    "/portal/batches/batch_x/cancel/",
    "/portal/bundles/bnd_x/download/",
]
PORTAL_HTMX_GETS = ["/portal/batches/batch_x/row/", "/portal/bundles/bnd_x/row/", "/portal/files/file-x/download/"]
STAFF_GETS = ["/staff/bundles/", "/staff/billing/"]
STAFF_POSTS = ["/staff/bundles/bnd_x/rebuild/"]
OWNER_POSTS = ["/portal/billing/checkout/", "/portal/billing/manage/"]


@pytest.mark.parametrize("url", PORTAL_GETS + PORTAL_HTMX_GETS + STAFF_GETS)
def test_it_sends_anonymous_visitors_to_the_login_page(client: Client, db: Any, url: str) -> None:
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/portal/login/?next=")


@pytest.mark.parametrize("url", PORTAL_POSTS + STAFF_POSTS)
def test_it_sends_anonymous_posts_to_the_login_page(client: Client, db: Any, url: str) -> None:
    response = client.post(url, {})
    assert response.status_code == 302
    assert "/portal/login/" in response["Location"]


@pytest.mark.parametrize("url", PORTAL_GETS)
def test_it_lets_members_open_the_new_pages(member_client: Client, iris: Any, url: str) -> None:
    assert member_client.get(url).status_code == 200


@pytest.mark.parametrize("url", PORTAL_GETS + PORTAL_HTMX_GETS)
def test_it_refuses_users_without_an_organisation(db: Any, url: str) -> None:
    assert client_as(make_user("lonely", None)).get(url).status_code == 403


def test_the_page_for_a_user_without_an_organisation_links_only_to_what_they_can_do(db: Any) -> None:
    """Its navigation listed Overview, API keys, Usage, ... Billing: every one of them this same 403."""
    content = client_as(make_user("lonely", None)).get("/portal/keys/").content.decode()
    links = set(re.findall(r'href="(/portal/[^"]*)"', content))
    assert links == {"/portal/", "/portal/organisation/new/"}  # the brand, and Create an organisation
    assert 'action="/portal/logout/"' in content


@pytest.mark.parametrize("url", ["/portal/batches/batch_x/row/", "/portal/bundles/bnd_x/row/", "/portal/usage/calls/"])
def test_a_polled_row_of_a_member_removed_meanwhile_reloads_the_page_instead_of_polling_a_403(
    db: Any, url: str
) -> None:
    """htmx swaps no 403 and keeps polling: the page went on asking every second, forever, unchanged."""
    response = client_as(make_user("lonely", None)).get(url, headers={"HX-Request": "true"})
    assert response.status_code == 403
    assert response["HX-Refresh"] == "true"  # the whole page reloads: "You are not a member of any organisation"


@pytest.mark.parametrize("url", PORTAL_HTMX_GETS)
def test_it_answers_404_for_unknown_objects(member_client: Client, url: str) -> None:
    assert member_client.get(url, headers={"HX-Request": "true"}).status_code == 404


@pytest.mark.parametrize("url", OWNER_POSTS)
def test_it_keeps_plan_and_payment_changes_to_owners(member_client: Client, url: str) -> None:
    assert member_client.post(url, {"plan": "payg"}).status_code == 403


@pytest.mark.parametrize("url", STAFF_GETS)
def test_it_refuses_staff_pages_to_customers(owner_client: Client, url: str) -> None:
    assert owner_client.get(url).status_code == 403


@pytest.mark.parametrize("url", STAFF_POSTS)
def test_it_refuses_staff_posts_to_customers(owner_client: Client, url: str) -> None:
    assert owner_client.post(url, {}).status_code == 403


@pytest.mark.parametrize("url", STAFF_GETS)
def test_it_opens_staff_pages_to_staff(staff_client: Client, url: str) -> None:
    assert staff_client.get(url).status_code == 200


@pytest.mark.parametrize("url", PORTAL_POSTS + STAFF_POSTS)
def test_it_enforces_csrf(owner: Any, staff_user: Any, url: str) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff_user if url.startswith("/staff/") else owner)
    assert client.post(url, {}).status_code == 403


def test_it_shows_the_new_entries_in_the_navigation(owner_client: Client, staff_client: Client) -> None:
    page = owner_client.get("/portal/").content.decode()
    entries = [
        ("/portal/batches/", "Batch jobs"),
        ("/portal/bundles/", "Edge bundles"),
        ("/portal/billing/", "Billing"),
    ]
    for href, label in entries:
        assert f'href="{href}">{label}</a>' in page
    staff_page = staff_client.get("/staff/").content.decode()
    assert 'href="/staff/bundles/">Bundle builds</a>' in staff_page
    assert 'href="/staff/billing/">Billing health</a>' in staff_page

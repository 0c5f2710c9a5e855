"""Who may open what: every portal and staff view, for anonymous users, members, owners, staff and outsiders."""

from typing import Any

import pytest
from django.test import Client

from apiservice.models import APIKey
from apiservice.services import api_key_create
from portal.models import Invitation
from tests.portal.conftest import client_as, make_user

PORTAL_GETS = [
    "/portal/",
    "/portal/keys/",
    "/portal/usage/",
    "/portal/usage/calls/",
    "/portal/usage/export.csv",
    "/portal/models/",
    "/portal/models/iris/",
    "/portal/team/",
]
PORTAL_POSTS = [
    "/portal/keys/",
    "/portal/playground/key/",
    "/portal/organisation/switch/",
    "/portal/team/",
]
STAFF_GETS = [
    "/staff/",
    "/staff/usage/export.csv",
    "/staff/models/",
    "/staff/models/iris/",
    "/staff/models/iris/versions/1/",
]
STAFF_POSTS = ["/staff/models/upload/", "/staff/models/iris/aliases/move/"]


@pytest.mark.parametrize("url", PORTAL_GETS + STAFF_GETS)
def test_it_sends_anonymous_visitors_to_the_login_page(client: Client, iris: Any, url: str) -> None:
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/portal/login/?next=")


@pytest.mark.parametrize("url", PORTAL_POSTS + STAFF_POSTS)
def test_it_sends_anonymous_posts_to_the_login_page(client: Client, iris: Any, url: str) -> None:
    response = client.post(url, {})
    assert response.status_code == 302
    assert "/portal/login/" in response["Location"]


@pytest.mark.parametrize(
    "url",
    [
        "/portal/bundles/bnd_0123/download/",
        "/portal/keys/mm_abcdefgh/revoke/",
        "/portal/team/members/1/remove/",
        "/portal/billing/checkout/",
        "/staff/models/upload/",
    ],
)
def test_a_form_posted_after_the_session_ended_comes_back_to_its_page_after_logging_in(
    client: Client, owner: Any, url: str
) -> None:
    """The login page's `next` was the form's action, which it then opened with a GET: a 405 page."""
    response = client.post(url, {}, HTTP_REFERER="http://testserver/portal/bundles/?page=2")
    assert response["Location"] == "/portal/login/?next=/portal/bundles/%3Fpage%3D2"
    login = {"username": owner.username, "password": "pw-Secret-123", "next": "/portal/bundles/?page=2"}
    assert client.post("/portal/login/", login, follow=True).status_code == 200


@pytest.mark.parametrize("referer", [None, "https://elsewhere.example/portal/keys/"])
def test_a_form_posted_after_the_session_ended_from_no_page_of_ours_goes_to_the_overview_after_logging_in(
    client: Client, referer: str | None
) -> None:
    headers = {"HTTP_REFERER": referer} if referer else {}
    response = client.post("/portal/bundles/bnd_0123/download/", {}, **headers)
    assert response["Location"] == "/portal/login/?next=/portal/"


@pytest.mark.parametrize("url", ["/portal/usage/calls/", "/portal/keys/"])
def test_it_sends_a_signed_out_htmx_request_to_the_login_page_as_a_whole_page(
    client: Client, iris: Any, url: str
) -> None:
    """A partial (Refresh, a polled row) after the session ended: the browser goes to the login page,
    which is never swapped into the page's table."""
    headers = {"HX-Request": "true", "HX-Current-URL": "http://testserver/portal/usage/?start=2026-11-01"}
    response = client.get(url, headers=headers)
    assert response.status_code == 200 and response.content == b""
    assert response["HX-Redirect"] == "/portal/login/?next=/portal/usage/%3Fstart%3D2026-11-01"


@pytest.mark.parametrize("url", PORTAL_GETS)
def test_it_lets_members_open_every_portal_page(member_client: Client, iris: Any, url: str) -> None:
    assert member_client.get(url).status_code == 200


@pytest.mark.parametrize("url", PORTAL_GETS)
def test_it_refuses_users_without_an_organisation(db: Any, iris: Any, url: str) -> None:
    loner = make_user("lonely", None)
    assert client_as(loner).get(url).status_code == 403


@pytest.mark.parametrize("url", STAFF_GETS)
def test_it_refuses_staff_pages_to_customers(owner_client: Client, iris: Any, url: str) -> None:
    assert owner_client.get(url).status_code == 403


@pytest.mark.parametrize("url", STAFF_POSTS)
def test_it_refuses_staff_posts_to_customers(owner_client: Client, iris: Any, url: str) -> None:
    assert owner_client.post(url, {"alias": "production", "version": "1", "confirm": "True"}).status_code == 403


@pytest.mark.parametrize("url", STAFF_GETS)
def test_it_opens_staff_pages_to_staff(staff_client: Client, iris: Any, url: str) -> None:
    assert staff_client.get(url).status_code == 200


def test_it_hides_another_organisations_private_model(owner_client: Client, private_model: Any) -> None:
    assert owner_client.get("/portal/models/secret-iris/").status_code == 404


def test_it_answers_404_for_another_organisations_key(owner_client: Client, other_org: Any) -> None:
    theirs, _ = api_key_create(organisation=other_org, name="theirs")
    assert owner_client.post(f"/portal/keys/{theirs.prefix}/revoke/").status_code == 404
    assert owner_client.post(f"/portal/keys/{theirs.prefix}/revoke/", HTTP_HX_REQUEST="true").status_code == 404
    theirs.refresh_from_db()
    assert not theirs.revoked


def test_it_lets_members_revoke_only_their_own_keys(member_client: Client, member: Any, owner: Any, org: Any) -> None:
    owners_key, _ = api_key_create(organisation=org, name="owner's", created_by=owner)
    own_key, _ = api_key_create(organisation=org, name="mine", created_by=member)
    assert member_client.post(f"/portal/keys/{owners_key.prefix}/revoke/").status_code == 403
    assert member_client.post(f"/portal/keys/{own_key.prefix}/revoke/").status_code == 302
    assert APIKey.objects.get(pk=own_key.pk).revoked
    assert not APIKey.objects.get(pk=owners_key.pk).revoked


def test_it_lets_owners_revoke_any_key_of_their_organisation(owner_client: Client, member: Any, org: Any) -> None:
    members_key, _ = api_key_create(organisation=org, name="member's", created_by=member)
    response = owner_client.post(f"/portal/keys/{members_key.prefix}/revoke/", HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    assert b"revoked" in response.content


def test_it_refuses_invitations_from_members(member_client: Client) -> None:
    assert member_client.post("/portal/team/", {"email": "x@example.com", "role": "member"}).status_code == 403
    assert not Invitation.objects.exists()


def test_it_answers_404_for_another_organisations_invitation_and_member(
    owner_client: Client, other_owner: Any, other_org: Any
) -> None:
    from datetime import timedelta

    from django.utils import timezone

    invitation = Invitation.objects.create(
        organisation=other_org,
        email="z@example.com",
        token_hash="x" * 64,
        expires_at=timezone.now() + timedelta(days=1),
    )
    assert owner_client.post(f"/portal/team/invitations/{invitation.pk}/revoke/").status_code == 404
    membership = other_owner.memberships.get()
    assert owner_client.post(f"/portal/team/members/{membership.pk}/remove/").status_code == 404


def test_it_refuses_owner_actions_to_members(member_client: Client, owner: Any, org: Any) -> None:
    membership = owner.memberships.get()
    assert member_client.post(f"/portal/team/members/{membership.pk}/remove/").status_code == 403


def test_it_cannot_switch_to_an_organisation_the_user_is_not_in(owner_client: Client, other_org: Any) -> None:
    assert owner_client.post("/portal/organisation/switch/", {"organisation": other_org.pk}).status_code == 404


def test_it_answers_404_for_an_unknown_invitation_token(client: Client, db: Any) -> None:
    assert client.get("/portal/invitations/not-a-token/").status_code == 404


def test_it_requires_csrf_on_portal_forms(owner: Any) -> None:
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(owner)
    assert strict.post("/portal/keys/", {"name": "k", "scopes": ["predict"]}).status_code == 403

"""The portal's admin: invitations are made on the team page (which emails the link), never in the admin."""

from typing import Any

from django.test import Client

from apiservice.models import Organisation
from portal.models import Invitation

ADD = "/admin/portal/invitation/add/"


def test_it_offers_no_way_to_add_an_invitation_in_the_admin(admin_client: Client, org: Organisation) -> None:
    assert admin_client.get(ADD).status_code == 403
    form = {"organisation": org.pk, "role": "member", "created_at_0": "2026-11-25", "created_at_1": "10:00"}
    form |= {"expires_at_0": "2026-12-25", "expires_at_1": "10:00"}
    for email in ["one@example.com", "two@example.com"]:  # the second used to be a 500 (duplicate empty hash)
        assert admin_client.post(ADD, form | {"email": email}).status_code == 403
    assert not Invitation.objects.exists()
    assert ADD not in admin_client.get("/admin/portal/invitation/").content.decode()


def test_it_shows_an_invitation_made_on_the_team_page(admin_client: Client, org: Organisation, owner: Any) -> None:
    owner_client = Client()
    owner_client.force_login(owner)
    owner_client.post("/portal/team/", {"email": "later@example.com", "role": "member"})
    invitation = Invitation.objects.get()
    response = admin_client.get(f"/admin/portal/invitation/{invitation.pk}/change/")
    assert response.status_code == 200
    assert "later@example.com" in response.content.decode()


def test_it_answers_the_admin_pages_favicon_request_without_a_404(client: Client, db: Any) -> None:
    response = client.get("/favicon.ico")
    assert response.status_code == 204

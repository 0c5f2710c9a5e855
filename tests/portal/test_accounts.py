"""Sign-up, log-in, password reset and invitations."""

import re
import threading
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.db import connection, transaction
from django.test import Client, override_settings

from apiservice.models import Membership, Organisation
from portal import services
from portal.models import Invitation

from .conftest import client_as, make_user

SIGNUP = {
    "organisation_name": "Initech",
    "username": "peter",
    "email": "peter@initech.example",
    "password1": "tps-Reports-42",
    "password2": "tps-Reports-42",
}
HOOKED: list[Organisation] = []


def record_signup(*, organisation: Organisation) -> None:
    HOOKED.append(organisation)


def test_it_signs_up_an_owner_of_a_new_organisation(client: Client, db: Any) -> None:
    response = client.post("/portal/signup/", SIGNUP)
    assert response.status_code == 302
    membership = Membership.objects.select_related("organisation", "user").get(user__username="peter")
    assert membership.role == Membership.Role.OWNER
    assert membership.organisation.name == "Initech"
    assert client.get("/portal/").status_code == 200  # logged in


def test_it_never_joins_an_existing_organisation_with_the_same_name(client: Client, org: Organisation) -> None:
    client.post("/portal/signup/", {**SIGNUP, "organisation_name": org.name})
    assert Organisation.objects.filter(name=org.name).count() == 2
    assert not Membership.objects.filter(organisation=org, user__username="peter").exists()


def test_it_explains_invalid_sign_ups(client: Client, db: Any) -> None:
    get_user_model().objects.create_user("taken", "peter@initech.example", "x")
    response = client.post("/portal/signup/", {**SIGNUP, "password2": "different-42"})
    assert response.status_code == 200
    errors = response.context["form"].errors
    assert "email" in errors
    assert "password2" in errors
    assert not Organisation.objects.filter(name="Initech").exists()


@override_settings(PORTAL_SIGNUP_HOOKS=["tests.portal.test_accounts.record_signup"])
def test_it_runs_the_signup_hooks(client: Client, db: Any) -> None:
    HOOKED.clear()
    client.post("/portal/signup/", SIGNUP)
    assert [o.name for o in HOOKED] == ["Initech"]


def test_it_logs_in_and_out(client: Client, owner: Any) -> None:
    response = client.post("/portal/login/", {"username": "olivia", "password": "pw-Secret-123"})
    assert response.status_code == 302
    assert client.get("/portal/").status_code == 200
    client.post("/portal/logout/")
    assert client.get("/portal/").status_code == 302


def test_it_emails_a_password_reset_link_that_works(client: Client, owner: Any) -> None:
    response = client.post("/portal/password-reset/", {"email": owner.email})
    assert response.status_code == 302
    assert len(mail.outbox) == 1
    link = re.search(r"http://testserver(/portal/password-reset/\S+/)", mail.outbox[0].body)
    assert link is not None
    form_page = client.get(link.group(1), follow=True)
    assert form_page.context["validlink"]
    done = client.post(
        form_page.redirect_chain[-1][0], {"new_password1": "brand-New-pw-9", "new_password2": "brand-New-pw-9"}
    )
    assert done.status_code == 302
    assert client.login(username="olivia", password="brand-New-pw-9")


def test_it_invites_a_teammate_who_signs_up_from_the_link(owner_client: Client, org: Organisation) -> None:
    response = owner_client.post("/portal/team/", {"email": "Newbie@Example.com", "role": "member"})
    assert response.status_code == 302
    assert mail.outbox[0].to == ["newbie@example.com"]
    path = re.search(r"http://testserver(/portal/invitations/\S+/)", mail.outbox[0].body).group(1)  # type: ignore[union-attr]
    visitor = Client()
    assert visitor.get(path).status_code == 200
    accepted = visitor.post(
        path, {"username": "newbie", "password1": "Welcome-aboard-7", "password2": "Welcome-aboard-7"}
    )
    assert accepted.status_code == 302
    membership = Membership.objects.get(user__username="newbie")
    assert (membership.organisation, membership.role, membership.user.email) == (org, "member", "newbie@example.com")
    assert Client().get(path).status_code == 404  # used once


def test_it_lets_a_signed_in_user_accept_an_invitation(
    owner_client: Client, other_owner: Any, org: Organisation
) -> None:
    owner_client.post("/portal/team/", {"email": other_owner.email, "role": "owner"})
    path = re.search(r"http://testserver(/portal/invitations/\S+/)", mail.outbox[0].body).group(1)  # type: ignore[union-attr]
    gary = Client()
    gary.force_login(other_owner)
    assert gary.post(path).status_code == 302
    assert Membership.objects.get(user=other_owner, organisation=org).role == "owner"
    gary.post("/portal/organisation/switch/", {"organisation": org.pk})
    assert gary.get("/portal/").context["request"].membership.organisation == org


def test_it_refuses_to_invite_an_existing_member(owner_client: Client, member: Any) -> None:
    response = owner_client.post("/portal/team/", {"email": member.email, "role": "member"})
    assert response.status_code == 200
    assert "already a member" in str(response.context["form"].errors)
    assert not Invitation.objects.exists()


def test_it_keeps_the_last_owner(owner_client: Client, owner: Any) -> None:
    owner_client.post(f"/portal/team/members/{owner.memberships.get().pk}/remove/")
    assert owner.memberships.exists()


@pytest.mark.parametrize("role", ["member", "owner"])
def test_it_revokes_a_pending_invitation(owner_client: Client, role: str) -> None:
    owner_client.post("/portal/team/", {"email": "later@example.com", "role": role})
    invitation = Invitation.objects.get()
    owner_client.post(f"/portal/team/invitations/{invitation.pk}/revoke/")
    invitation.refresh_from_db()
    assert invitation.status == "revoked"


def test_revoking_an_invitation_accepted_meanwhile_says_they_joined_instead_of_revoked(
    owner_client: Client, org: Organisation
) -> None:
    """From a team page shown before the invitee accepted, Revoke did nothing yet said "revoked": the
    owner believed the invitee kept out while they were a member."""
    owner_client.post("/portal/team/", {"email": "quick@example.com", "role": "member"})
    invitation = Invitation.objects.get()
    services.invitation_signup(invitation=invitation, username="quick", password="pw-Secret-123")
    response = owner_client.post(f"/portal/team/invitations/{invitation.pk}/revoke/", follow=True)
    content = response.content.decode()
    assert "Invitation to quick@example.com revoked." not in content
    assert "quick@example.com already accepted the invitation" in content
    assert Membership.objects.filter(organisation=org, user__username="quick").exists()


def test_it_refuses_an_invitation_to_an_account_with_another_address(owner_client: Client, other_owner: Any) -> None:
    owner_client.post("/portal/team/", {"email": "someone-else@example.com", "role": "owner"})
    path = re.search(r"http://testserver(/portal/invitations/\S+/)", mail.outbox[0].body).group(1)  # type: ignore[union-attr]
    gary = Client()
    gary.force_login(other_owner)
    response = gary.post(path, follow=True)
    assert "log in with that address" in response.content.decode()
    assert other_owner.memberships.count() == 1
    assert Invitation.objects.get().status == "pending"


def _invitation_path(message: Any) -> str:
    return re.search(r"http://testserver(/portal/invitations/\S+/)", message.body).group(1)  # type: ignore[union-attr]


@pytest.mark.parametrize("address", ["gary@example.com", "Gary@Example.COM"])
def test_it_refuses_to_make_a_second_account_for_an_address_from_an_invitation(
    owner_client: Client, other_owner: Any, org: Organisation, address: str
) -> None:
    owner_client.post("/portal/team/", {"email": address, "role": "member"})
    path = _invitation_path(mail.outbox[0])
    visitor = Client()
    response = visitor.post(
        path, {"username": "gary2", "password1": "Welcome-aboard-7", "password2": "Welcome-aboard-7"}
    )
    assert response.status_code == 200
    assert "An account with gary@example.com already exists: log in to accept the invitation." in str(
        response.context["form"].non_field_errors()
    )
    assert get_user_model().objects.filter(email__iexact="gary@example.com").count() == 1
    assert not Membership.objects.filter(organisation=org, user=other_owner).exists()
    assert Invitation.objects.get().status == "pending"  # still there for gary, once logged in
    assert "_auth_user_id" not in visitor.session


def test_it_renews_and_resends_an_open_invitation_instead_of_making_a_second(
    owner_client: Client, org: Organisation
) -> None:
    owner_client.post("/portal/team/", {"email": "twice@example.com", "role": "member"})
    first_path = _invitation_path(mail.outbox[0])
    response = owner_client.post("/portal/team/", {"email": "Twice@Example.com", "role": "owner"}, follow=True)
    assert "Invitation sent again to twice@example.com" in response.content.decode()
    invitation = Invitation.objects.get()
    assert (invitation.email, invitation.role, invitation.status) == ("twice@example.com", "owner", "pending")
    assert [m.to for m in mail.outbox] == [["twice@example.com"], ["twice@example.com"]]
    second_path = _invitation_path(mail.outbox[1])
    assert Client().get(first_path).status_code == 404  # only the latest link works
    accepted = Client().post(
        second_path, {"username": "twice", "password1": "Welcome-aboard-7", "password2": "Welcome-aboard-7"}
    )
    assert accepted.status_code == 302
    assert Membership.objects.get(user__username="twice", organisation=org).role == "owner"


def test_it_invites_an_address_again_once_its_invitation_was_revoked(owner_client: Client) -> None:
    owner_client.post("/portal/team/", {"email": "again@example.com", "role": "member"})
    owner_client.post(f"/portal/team/invitations/{Invitation.objects.get().pk}/revoke/")
    response = owner_client.post("/portal/team/", {"email": "again@example.com", "role": "member"}, follow=True)
    assert "Invitation sent to again@example.com." in response.content.decode()
    assert sorted(i.status for i in Invitation.objects.all()) == ["pending", "revoked"]


@pytest.mark.parametrize("value", ["abc", "1.5", "", "99999999999999999999"])
def test_it_answers_404_to_a_switch_to_an_organisation_that_is_not_a_number(owner_client: Client, value: str) -> None:
    response = owner_client.post("/portal/organisation/switch/", {"organisation": value})
    assert response.status_code == 404


def test_it_invites_to_an_organisation_whose_name_has_a_line_break(owner_client: Client, org: Organisation) -> None:
    org.name = "Acme\nRobotics"  # e.g. renamed in the admin; an email subject cannot hold a line break
    org.save(update_fields=["name"])
    response = owner_client.post("/portal/team/", {"email": "newbie@example.com", "role": "member"})
    assert response.status_code == 302
    assert mail.outbox[0].subject == "Join Acme Robotics on ModelMeter"


def test_it_signs_up_an_organisation_name_on_one_line(client: Client, db: Any) -> None:
    client.post("/portal/signup/", SIGNUP | {"organisation_name": " Initech\r\n\tLabs  "})
    assert Organisation.objects.get().name == "Initech Labs"


# --- A signed-in user with no organisation (removed from their only one) ---------------------------


def test_a_user_removed_from_their_only_organisation_is_offered_a_new_one(
    owner_client: Client, member: Any, org: Organisation
) -> None:
    owner_client.post(f"/portal/team/members/{Membership.objects.get(user=member).pk}/remove/")
    page = client_as(member).get("/portal/")
    assert page.status_code == 403
    assert 'href="/portal/organisation/new/"' in page.content.decode()


@override_settings(PORTAL_SIGNUP_HOOKS=["tests.portal.test_accounts.record_signup"])
def test_a_signed_in_user_without_an_organisation_creates_one_and_owns_it(db: Any) -> None:
    HOOKED.clear()
    loner = make_user("lonely", None)
    client = client_as(loner)
    response = client.post("/portal/organisation/new/", {"organisation_name": "  Solo   Labs "})
    assert response.status_code == 302
    membership = Membership.objects.select_related("organisation").get(user=loner)
    assert (membership.organisation.name, membership.role) == ("Solo Labs", Membership.Role.OWNER)
    assert [o.name for o in HOOKED] == ["Solo Labs"]  # the free plan, as at sign-up
    assert client.get("/portal/").context["request"].membership == membership


def test_creating_an_organisation_needs_a_name_and_a_login(client: Client, db: Any) -> None:
    assert client.get("/portal/organisation/new/").status_code == 302  # to the login page
    response = client_as(make_user("lonely", None)).post("/portal/organisation/new/", {"organisation_name": " "})
    assert response.status_code == 200
    assert "organisation_name" in response.context["form"].errors
    assert not Organisation.objects.exists()


def test_the_invitation_list_says_its_times_are_utc(owner_client: Client) -> None:
    owner_client.post("/portal/team/", {"email": "newbie@example.com", "role": "member"})
    assert '<th scope="col">Sent (UTC)</th>' in owner_client.get("/portal/team/").content.decode()


def test_an_invitation_opened_by_another_account_says_so_before_offering_to_accept(
    owner_client: Client, other_owner: Any
) -> None:
    owner_client.post("/portal/team/", {"email": "someone-else@example.com", "role": "member"})
    gary = client_as(other_owner)
    page = gary.get(_invitation_path(mail.outbox[0])).content.decode()
    assert "someone-else@example.com" in page
    assert "You are logged in as gary (gary@example.com)" in page
    assert "Accept the invitation</button>" not in page  # it could only fail
    path = _invitation_path(mail.outbox[0])
    assert gary.post("/portal/logout/", {"next": path})["Location"] == path  # *Log out* comes back here


@pytest.mark.django_db(transaction=True)
def test_two_owners_removing_each_other_at_once_leave_one_owner(owner: Any, org: Organisation) -> None:
    """Counting the owners took no lock (Django drops FOR UPDATE from a count()): while one removal was
    uncommitted, the other still counted two owners, and the organisation was left with none."""
    second = make_user("oscar", org, Membership.Role.OWNER)
    first_done, commit = threading.Event(), threading.Event()
    outcomes: list[Any] = []

    def remove(user: Any, *, hold: bool) -> None:
        try:
            with transaction.atomic():  # the first removal stays uncommitted until the second has started
                services.membership_remove(membership=Membership.objects.get(user=user, organisation=org))
                if hold:
                    first_done.set()
                    commit.wait(timeout=10)
            outcomes.append("removed")
        except services.PortalError as exc:
            outcomes.append(str(exc))
        finally:
            connection.close()

    first = threading.Thread(target=remove, args=(second,), kwargs={"hold": True})
    first.start()
    assert first_done.wait(timeout=10)
    other = threading.Thread(target=remove, args=(owner,), kwargs={"hold": False})
    other.start()
    other.join(timeout=1)  # blocks on the first one's locks until it commits (or, unlocked, is done)
    commit.set()
    first.join(timeout=10)
    other.join(timeout=10)
    assert sorted(outcomes) == ["An organisation needs at least one owner.", "removed"]
    assert Membership.objects.filter(organisation=org, role=Membership.Role.OWNER).count() == 1

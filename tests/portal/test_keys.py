"""API keys from the portal: created with a name, scopes and expiry, shown once, listed, revoked."""

from datetime import timedelta
from typing import Any

from django.test import Client
from django.utils import timezone

from apiservice.models import APIKey, Organisation
from apiservice.services import api_key_create, api_key_revoke
from tests.conftest import APIClient


def test_it_creates_a_key_and_shows_its_secret_once(owner_client: Client, org: Organisation, iris: Any) -> None:
    expiry = (timezone.localdate() + timedelta(days=10)).isoformat()
    response = owner_client.post(
        "/portal/keys/",
        {"name": "backend", "scopes": ["predict", "usage"], "expires_on": expiry},
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    secret = response.context["secret"]
    key = APIKey.objects.get(organisation=org, name="backend")
    assert key.scopes == ["predict", "usage"]
    assert key.expiry_date is not None
    assert secret.encode() in response.content
    assert secret not in key.hashed_key
    assert (
        APIClient(secret).post_json("/v1/models/iris:predict", {"instances": [[5.1, 3.5, 1.4, 0.2]]}).status_code == 200
    )
    listing = owner_client.get("/portal/keys/")
    assert key.prefix.encode() in listing.content
    assert secret.encode() not in listing.content


def test_it_explains_invalid_keys(owner_client: Client, org: Organisation) -> None:
    yesterday = (timezone.localdate() - timedelta(days=1)).isoformat()
    response = owner_client.post("/portal/keys/", {"name": "", "scopes": ["root"], "expires_on": yesterday})
    errors = response.context["form"].errors
    assert set(errors) == {"name", "scopes", "expires_on"}
    assert not APIKey.objects.filter(organisation=org).exists()


def test_it_revokes_a_key_which_then_stops_working(owner_client: Client, org: Organisation, iris: Any) -> None:
    response = owner_client.post("/portal/keys/", {"name": "tmp", "scopes": ["predict"]})
    secret = response.context["secret"]
    key = APIKey.objects.get(organisation=org, name="tmp")
    owner_client.post(f"/portal/keys/{key.prefix}/revoke/")
    key.refresh_from_db()
    assert key.status == "revoked"
    assert (
        APIClient(secret).post_json("/v1/models/iris:predict", {"instances": [[5.1, 3.5, 1.4, 0.2]]}).status_code == 401
    )


def test_it_creates_a_short_lived_predict_only_playground_key(member_client: Client, org: Organisation) -> None:
    response = member_client.post("/portal/playground/key/", HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    key = APIKey.objects.get(organisation=org)
    assert key.scopes == ["predict"]
    assert key.expiry_date is not None
    assert key.expiry_date <= timezone.now() + timedelta(hours=24)
    assert response.context["secret"].encode() in response.content


def test_it_shows_the_playground_with_an_example_body(owner_client: Client, iris: Any) -> None:
    response = owner_client.get("/portal/models/iris/")
    assert response.context["examples"] == {1: '{"instances": [[1.0, 1.0, 1.0, 1.0]]}'}
    assert b"playground-form" in response.content


def test_the_overview_counts_neither_revoked_nor_expired_keys_as_active(
    owner_client: Client, org: Organisation
) -> None:
    api_key_create(organisation=org, name="backend", scopes=["predict"])
    revoked, _ = api_key_create(organisation=org, name="old", scopes=["predict"])
    api_key_revoke(api_key=revoked)
    api_key_create(  # a playground key a day later
        organisation=org, name="Playground", scopes=["predict"], expires_at=timezone.now() - timedelta(hours=1)
    )
    response = owner_client.get("/portal/")
    assert response.context["active_keys"] == 1


def test_a_revoked_keys_row_keeps_its_budget(owner_client: Client, org: Organisation) -> None:
    owner_client.post("/portal/keys/", {"name": "capped", "scopes": ["predict"], "monthly_budget_units": 500})
    key = APIKey.objects.get(name="capped")
    row = owner_client.post(f"/portal/keys/{key.prefix}/revoke/", HTTP_HX_REQUEST="true").content.decode()
    assert "revoked" in row
    assert "budget 500 units/month" in row  # as the list shows it after a reload


def test_the_key_list_says_its_times_are_utc(owner_client: Client, org: Organisation) -> None:
    api_key_create(organisation=org, name="backend", scopes=["predict"], expires_at=timezone.now() + timedelta(days=2))
    page = owner_client.get("/portal/keys/").content.decode()
    assert '<th scope="col">Expires (UTC)</th>' in page
    assert '<th scope="col">Last used (UTC)</th>' in page


def test_the_key_list_says_who_created_each_key(owner_client: Client, org: Organisation, member: Any) -> None:
    """So an owner can find (and revoke) the keys of a teammate who left."""
    api_key_create(organisation=org, name="mikes key", scopes=["predict"], created_by=member)
    api_key_create(organisation=org, name="seeded", scopes=["predict"])  # no creator (seed_demo, the admin)
    page = owner_client.get("/portal/keys/").content.decode()
    assert '<th scope="col">Created by</th>' in page
    assert '<td data-testid="key-creator">mike</td>' in page
    assert '<td data-testid="key-creator">—</td>' in page


def test_it_never_puts_a_keys_hash_in_the_page_or_its_revoke_url(owner_client: Client, org: Organisation) -> None:
    """The revoke form's URL carried the key's id, which is "<prefix>.<SHA-512 of the secret>": every
    member's page source, browser history and the server's access log held each key's hash."""
    key, _ = api_key_create(organisation=org, name="backend")
    listing = owner_client.get("/portal/keys/").content.decode()
    assert key.hashed_key not in listing
    assert f'action="/portal/keys/{key.prefix}/revoke/"' in listing
    revoked = owner_client.post(f"/portal/keys/{key.prefix}/revoke/", HTTP_HX_REQUEST="true")
    assert revoked.status_code == 200
    assert key.hashed_key not in revoked.content.decode()
    key.refresh_from_db()
    assert key.status == "revoked"

"""Edge bundles in the portal (request, polled row, signed download, keys) and staff rebuilds."""

from typing import Any

import pytest
from django.test import Client

from apiservice.models import Organisation
from billing.models import UsageRecord
from edge import services as edge_services
from edge.models import Bundle
from models_registry.models import ModelVersion
from tests.conftest import register


def build_now(version: ModelVersion, variants: list[str] | None = None) -> Bundle:
    bundle = edge_services.bundle_request(version=version, variants=variants)
    edge_services.bundle_build(bundle_id=bundle.pk)
    bundle.refresh_from_db()
    return bundle


@pytest.fixture
def secret_bundle(private_model: ModelVersion) -> Bundle:
    """A queued bundle of `other_org`'s private model."""
    return edge_services.bundle_request(version=private_model, variants=["fp32"])


def test_it_requests_a_bundle_with_the_chosen_variants(member_client: Client, iris: ModelVersion) -> None:
    response = member_client.post("/portal/bundles/", {"version": iris.pk, "variants": ["fp32", "ort"]})
    assert response.status_code == 302
    bundle = Bundle.objects.get(model_version=iris)
    assert (bundle.variants, bundle.status) == (["fp32", "ort"], "queued")
    again = member_client.post("/portal/bundles/", {"version": iris.pk, "variants": ["ort", "fp32"]})
    assert again.status_code == 302 and Bundle.objects.count() == 1  # built once per (version, variants)


def test_it_validates_the_request(owner_client: Client, iris: ModelVersion, private_model: ModelVersion) -> None:
    response = owner_client.post("/portal/bundles/", {"version": private_model.pk, "variants": ["fp32"]})
    assert response.status_code == 400 and "Select a valid choice" in response.content.decode()
    response = owner_client.post("/portal/bundles/", {"version": iris.pk})
    assert response.status_code == 400 and "This field is required." in response.content.decode()
    assert not Bundle.objects.exists()


def test_it_polls_a_build_then_downloads_through_a_signed_url(
    owner_client: Client, org: Organisation, iris: ModelVersion
) -> None:
    bundle = edge_services.bundle_request(version=iris, variants=["fp32"])
    row = owner_client.get(f"/portal/bundles/{bundle.public_id}/row/", headers={"HX-Request": "true"}).content.decode()
    assert 'hx-trigger="every 1s"' in row and "Download" not in row
    edge_services.bundle_build(bundle_id=bundle.pk)
    row = owner_client.get(f"/portal/bundles/{bundle.public_id}/row/", headers={"HX-Request": "true"}).content.decode()
    assert "hx-trigger" not in row and 'data-status="ready"' in row and "Download" in row

    response = owner_client.post(f"/portal/bundles/{bundle.public_id}/download/")
    assert response.status_code == 302
    assert response["Location"].startswith(f"/v1/bundles/{bundle.public_id}/file?token=")
    download = Client().get(response["Location"])  # the signed URL needs no session and no key
    assert download.status_code == 200
    body = b"".join(download.streaming_content)
    assert body[:2] == b"PK" and len(body) == Bundle.objects.get(pk=bundle.pk).size_bytes
    row = UsageRecord.objects.get(face="bundle-download")
    assert (row.organisation_id, row.api_key_id, row.meter, row.units) == (org.pk, None, "bundle_downloads", 1)


def test_it_refuses_to_download_a_bundle_that_is_not_ready(owner_client: Client, iris: ModelVersion) -> None:
    bundle = edge_services.bundle_request(version=iris, variants=["fp32"])
    response = owner_client.post(f"/portal/bundles/{bundle.public_id}/download/", follow=True)
    assert "is not ready (queued)" in response.content.decode()


def test_it_lists_the_public_keys_and_how_to_verify(member_client: Client) -> None:
    page = member_client.get("/portal/bundles/").content.decode()
    assert "-----BEGIN PUBLIC KEY-----" in page and "python run.py verify" in page and "/v1/edge/keys" in page


def test_it_hides_another_organisations_private_bundles(owner_client: Client, secret_bundle: Bundle) -> None:
    public_id = secret_bundle.public_id
    assert owner_client.get(f"/portal/bundles/{public_id}/row/", headers={"HX-Request": "true"}).status_code == 404
    assert owner_client.post(f"/portal/bundles/{public_id}/download/").status_code == 404
    assert public_id not in owner_client.get("/portal/bundles/").content.decode()


def test_it_lets_the_owning_organisation_see_its_private_bundle(other_owner: Any, secret_bundle: Bundle) -> None:
    from tests.portal.conftest import client_as

    assert secret_bundle.public_id in client_as(other_owner).get("/portal/bundles/").content.decode()


def test_it_lets_staff_see_and_rebuild_builds(staff_client: Client, db: Any) -> None:
    version = register("iris-edge", "iris")
    bundle = build_now(version, ["fp32"])
    assert bundle.status == "ready"
    listing = staff_client.get("/staff/bundles/?status=ready").content.decode()
    assert bundle.public_id in listing and "Rebuild" in listing
    assert bundle.public_id in staff_client.get("/staff/models/iris-edge/").content.decode()  # the model's builds
    response = staff_client.post(f"/staff/bundles/{bundle.public_id}/rebuild/", {"next": "/staff/models/iris-edge/"})
    assert response.status_code == 302 and response["Location"] == "/staff/models/iris-edge/"
    bundle.refresh_from_db()
    assert bundle.status == "queued"
    again = staff_client.post(f"/staff/bundles/{bundle.public_id}/rebuild/", {"next": "https://evil.example/"})
    assert again["Location"] == "/staff/bundles/"  # queued: nothing to do, and no open redirect
    assert staff_client.post("/staff/bundles/bnd_nope/rebuild/").status_code == 404


def test_a_polled_bundle_row_that_is_gone_reloads_the_page(owner_client: Client, secret_bundle: Bundle) -> None:
    headers = {"HX-Request": "true"}
    response = owner_client.get(f"/portal/bundles/{secret_bundle.public_id}/row/", headers=headers)
    assert (response.status_code, response.get("HX-Refresh")) == (404, "true")

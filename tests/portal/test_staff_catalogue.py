"""Staff upload versions (with a validation report) and move aliases after a confirmation."""

from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from models_registry.models import AliasMove, MLModel, ModelAlias, ModelVersion
from tests.conftest import model_bytes


def test_it_uploads_a_valid_version_and_shows_its_report(staff_client: Client, iris: ModelVersion) -> None:
    upload = SimpleUploadedFile("iris.onnx", model_bytes("iris"))
    response = staff_client.post("/staff/models/upload/", {"model_name": "iris", "file": upload, "aliases": "staging"})
    assert response.status_code == 302
    assert response["Location"] == "/staff/models/iris/versions/2/"
    version = ModelVersion.objects.get(model__name="iris", number=2)
    assert version.status == "ready"
    assert ModelAlias.objects.get(model__name="iris", name="staging").version == version
    report = staff_client.get(response["Location"])
    assert b"ready" in report.content
    assert version.sha256.encode() in report.content


def test_it_reports_why_a_version_failed(staff_client: Client, db: Any) -> None:
    upload = SimpleUploadedFile("junk.onnx", b"not an onnx file")
    response = staff_client.post("/staff/models/upload/", {"model_name": "junk", "file": upload}, follow=True)
    version = ModelVersion.objects.get(model__name="junk")
    assert version.status == "failed"
    assert version.failure_reason
    assert version.failure_reason.encode()[:40] in response.content


def test_it_explains_an_invalid_upload_form(staff_client: Client, db: Any) -> None:
    response = staff_client.post("/staff/models/upload/", {"model_name": "Bad Name!", "aliases": "latest"})
    assert response.status_code == 400
    assert set(response.context["form"].errors) == {"model_name", "file", "aliases"}
    assert not MLModel.objects.exists()


def test_it_moves_an_alias_only_after_confirmation(staff_client: Client, staff_user: Any, iris: ModelVersion) -> None:
    from tests.conftest import register

    second = register("iris", aliases=["canary"])
    review = staff_client.post("/staff/models/iris/aliases/move/", {"alias": "production", "version": "2"})
    assert review.status_code == 200
    assert b"moves from version" in review.content
    assert ModelAlias.objects.get(model__name="iris", name="production").version == iris
    done = staff_client.post(
        "/staff/models/iris/aliases/move/", {"alias": "production", "version": "2", "confirm": "True"}
    )
    assert done.status_code == 302
    assert ModelAlias.objects.get(model__name="iris", name="production").version == second
    move = AliasMove.objects.filter(alias__name="production").first()
    assert move is not None
    assert (move.from_version, move.to_version, move.moved_by) == (iris, second, staff_user)
    assert b"No moves yet" not in staff_client.get("/staff/models/iris/").content


def test_it_refuses_to_point_an_alias_at_a_failed_version(staff_client: Client, iris: ModelVersion) -> None:
    staff_client.post("/staff/models/upload/", {"model_name": "iris", "file": SimpleUploadedFile("x.onnx", b"junk")})
    response = staff_client.post(
        "/staff/models/iris/aliases/move/", {"alias": "production", "version": "2", "confirm": "True"}
    )
    assert response.status_code == 400
    assert "version" in response.context["form"].errors
    assert ModelAlias.objects.get(model__name="iris", name="production").version == iris


@pytest.mark.parametrize(
    ("version", "why"),
    [("2", "Version 2 of iris failed validation"), ("7", "iris has no version 7"), ("x", "iris has no version x")],
)
def test_it_says_why_an_alias_cannot_point_at_a_version(
    staff_client: Client, iris: ModelVersion, version: str, why: str
) -> None:
    """The form said only Django's "Select a valid choice. That choice is not one of the available choices."."""
    staff_client.post("/staff/models/upload/", {"model_name": "iris", "file": SimpleUploadedFile("x.onnx", b"junk")})

    response = staff_client.post("/staff/models/iris/aliases/move/", {"alias": "production", "version": version})

    assert response.status_code == 400
    assert response.context["form"].errors["version"] == [f"{why}; choose one of its ready versions."]


def test_it_explains_a_name_owned_by_another_organisation(staff_client: Client, private_model: Any, org: Any) -> None:
    upload = SimpleUploadedFile("iris.onnx", model_bytes("iris"))
    response = staff_client.post(
        "/staff/models/upload/", {"model_name": "secret-iris", "organisation": org.pk, "file": upload}
    )
    assert response.status_code == 400
    assert "already exists with another owner" in str(response.context["form"].non_field_errors())
    assert ModelVersion.objects.filter(model__name="secret-iris").count() == 1


def test_it_adds_a_version_to_a_private_model_without_choosing_its_owner_again(
    staff_client: Client, private_model: Any, other_org: Any
) -> None:
    """The owner field is for new models only: left empty, an existing private model keeps its owner."""
    upload = SimpleUploadedFile("iris.onnx", model_bytes("iris"))
    response = staff_client.post("/staff/models/upload/", {"model_name": "secret-iris", "file": upload})
    assert response.status_code == 302
    version = ModelVersion.objects.get(model__name="secret-iris", number=2)
    assert version.model.organisation == other_org

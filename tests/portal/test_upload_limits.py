"""Uploads through the portal, the staff pages and the admin are refused (413) from their Content-Length,
before Django streams the body to a temporary file."""

from typing import Any

from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from batches.models import File
from models_registry.models import ModelVersion

OVER_THE_FORM = 70 * 1024  # past a 1 KiB file cap plus the 64 KiB allowed for the form around it


def test_it_refuses_a_batch_file_over_the_cap_before_reading_it(owner_client: Client, iris: Any, settings: Any) -> None:
    settings.FILE_MAX_BYTES = 1024
    data = {"model": "iris", "output_format": "jsonl", "file": SimpleUploadedFile("rows.jsonl", b"x" * OVER_THE_FORM)}
    response = owner_client.post("/portal/batches/", data)
    assert response.status_code == 413
    assert "Upload too large" in response.content.decode()
    assert not File.objects.exists()


def test_it_refuses_from_the_declared_length_alone(owner_client: Client, iris: Any) -> None:
    """The test client's body is a few bytes; reading the 10 GB it declares would fail the test."""
    data = {"model": "iris", "file": SimpleUploadedFile("rows.jsonl", b"{}\n")}
    response = owner_client.post("/portal/batches/", data, CONTENT_LENGTH=str(10 * 1024**3))
    assert response.status_code == 413


def test_it_still_takes_a_file_under_the_cap(owner_client: Client, iris: Any, settings: Any) -> None:
    settings.FILE_MAX_BYTES = 1024
    row = b'{"custom_id": "a", "instances": [[5.1, 3.5, 1.4, 0.2]]}\n'
    response = owner_client.post(
        "/portal/batches/", {"model": "iris", "output_format": "jsonl", "file": SimpleUploadedFile("r.jsonl", row)}
    )
    assert response.status_code == 302
    assert File.objects.count() == 1


def test_it_refuses_a_model_upload_over_the_cap_on_the_staff_page(
    staff_client: Client, iris: ModelVersion, settings: Any
) -> None:
    settings.MODEL_MAX_BYTES = 1024
    upload = SimpleUploadedFile("big.onnx", b"x" * OVER_THE_FORM)
    response = staff_client.post("/staff/models/upload/", {"model_name": "iris", "file": upload})
    assert response.status_code == 413
    assert ModelVersion.objects.count() == 1


def test_it_refuses_a_model_upload_over_the_cap_in_the_admin(iris: ModelVersion, settings: Any) -> None:
    settings.MODEL_MAX_BYTES = 1024
    admin = get_user_model().objects.create_superuser("root", "root@example.com", "pw-root-123")
    client = Client()
    client.force_login(admin)
    upload = SimpleUploadedFile("big.onnx", b"x" * OVER_THE_FORM)
    response = client.post("/admin/models_registry/modelversion/add/", {"model": iris.model_id, "upload": upload})
    assert response.status_code == 413
    assert ModelVersion.objects.count() == 1


def test_it_holds_other_multipart_forms_to_the_request_cap(owner_client: Client, settings: Any) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
    response = owner_client.post("/portal/keys/", {"name": "k", "file": SimpleUploadedFile("x", b"x" * 4096)})
    assert response.status_code == 413

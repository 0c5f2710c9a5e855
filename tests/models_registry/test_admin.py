from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from models_registry.models import MLModel, ModelVersion
from models_registry.services import model_get_or_create
from tests.conftest import model_bytes


def _admin(django_user_model) -> Client:
    admin = django_user_model.objects.create_superuser("root", "root@example.com", "pw-root-123")
    client = Client()
    client.force_login(admin)
    return client


def test_staff_can_upload_a_version_in_the_admin(db, django_user_model):
    client = _admin(django_user_model)
    model = model_get_or_create(name="admin-iris")
    response = client.post(
        "/admin/models_registry/modelversion/add/",
        {"model": model.pk, "upload": SimpleUploadedFile("iris.onnx", model_bytes("iris")), "aliases": "production"},
        follow=True,
    )
    assert response.status_code == 200
    version = ModelVersion.objects.get(model=model)
    assert version.status == "ready"
    assert [a.name for a in version.aliases.all()] == ["production"]
    assert b"is ready" in response.content


def test_the_admin_reports_a_failed_upload(db, django_user_model):
    client = _admin(django_user_model)
    model = model_get_or_create(name="admin-bad")
    response = client.post(
        "/admin/models_registry/modelversion/add/",
        {"model": model.pk, "upload": SimpleUploadedFile("bad.onnx", b"nope"), "aliases": ""},
        follow=True,
    )
    assert b"failed validation" in response.content
    assert ModelVersion.objects.get(model=model).status == "failed"


def test_the_admin_pages_render(db, django_user_model, iris):
    client = _admin(django_user_model)
    for path in [
        "/admin/models_registry/mlmodel/",
        f"/admin/models_registry/mlmodel/{MLModel.objects.get().pk}/change/",
        f"/admin/models_registry/modelversion/{iris.pk}/change/",
        "/admin/models_registry/modelalias/",
        "/admin/apiservice/apikey/",
        "/admin/apiservice/organisation/",
        "/admin/billing/usagerecord/",
    ]:
        assert client.get(path).status_code == 200, path

from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from models_registry.models import AliasMove, MLModel, ModelAlias, ModelVersion
from models_registry.services import model_get_or_create, model_version_register
from tests.conftest import model_bytes


def _admin(django_user_model) -> Client:
    admin = django_user_model.objects.create_superuser("root", "root@example.com", "pw-root-123")
    client = Client()
    client.force_login(admin)
    return client


def _no_moves() -> dict[str, str]:
    """The management form of the read-only alias-move history inline."""
    return {"moves-TOTAL_FORMS": "0", "moves-INITIAL_FORMS": "0"}


def _upload_junk(client: Client, model: MLModel) -> Any:
    """Upload a file that is no ONNX model as a version of `model` in the admin."""
    return client.post(
        "/admin/models_registry/modelversion/add/",
        {"model": model.pk, "upload": SimpleUploadedFile("bad.onnx", b"nope"), "aliases": ""},
        follow=True,
    )


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
    model = model_get_or_create(name="admin-bad")
    response = _upload_junk(_admin(django_user_model), model)
    assert b"failed validation" in response.content
    assert ModelVersion.objects.get(model=model).status == "failed"


def test_a_failed_upload_in_the_admin_is_not_called_a_success_and_shows_its_report(db, django_user_model):
    """The admin said both "Version 1 failed validation: ..." and "... was added successfully", then showed
    the list; it now shows only the failure and opens the failed version, whose reason is on the page."""
    model = model_get_or_create(name="admin-bad")
    response = _upload_junk(_admin(django_user_model), model)
    version = ModelVersion.objects.get(model=model)
    shown = [str(m) for m in response.context["messages"]]
    assert shown == [f"Version 1 failed validation: {version.failure_reason}"]
    assert response.redirect_chain[-1][0] == f"/admin/models_registry/modelversion/{version.pk}/change/"
    assert b"Not an ONNX model" in response.content


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


# --- Refusals are form errors, not 500s -------------------------------------------------------------


@pytest.mark.parametrize("aliases", ["latest", "Bad Alias!", "staging, latest"])
def test_the_admin_explains_an_alias_it_cannot_point_at_an_upload(
    db: Any, django_user_model: Any, aliases: str
) -> None:
    client = _admin(django_user_model)
    model = model_get_or_create(name="admin-iris")
    response = client.post(
        "/admin/models_registry/modelversion/add/",
        {"model": model.pk, "upload": SimpleUploadedFile("iris.onnx", model_bytes("iris")), "aliases": aliases},
    )
    assert response.status_code == 200
    assert "aliases" in response.context["adminform"].form.errors
    assert not ModelVersion.objects.filter(model=model).exists()


def test_the_admin_names_the_new_version_in_its_success_message(db: Any, django_user_model: Any) -> None:
    client = _admin(django_user_model)
    model = model_get_or_create(name="admin-iris")
    response = client.post(
        "/admin/models_registry/modelversion/add/",
        {"model": model.pk, "upload": SimpleUploadedFile("iris.onnx", model_bytes("iris")), "aliases": ""},
        follow=True,
    )
    shown = [str(m) for m in response.context["messages"]]
    assert any("admin-iris:1" in m and "was added successfully" in m for m in shown), shown
    assert not any("None" in m for m in shown)


def test_the_admin_refuses_an_alias_to_another_models_version(
    db: Any, django_user_model: Any, iris: ModelVersion, diabetes: ModelVersion
) -> None:
    client = _admin(django_user_model)
    response = client.post(
        "/admin/models_registry/modelalias/add/",
        {"model": iris.model_id, "name": "canary", "version": diabetes.pk, **_no_moves()},
    )
    assert response.status_code == 200
    assert "belongs to another model" in str(response.context["adminform"].form.errors["version"])
    assert not ModelAlias.objects.filter(name="canary").exists()


@pytest.mark.parametrize("name", ["latest", "Bad Alias!"])
def test_the_admin_refuses_an_alias_name_the_service_would_refuse(
    db: Any, django_user_model: Any, iris: ModelVersion, name: str
) -> None:
    client = _admin(django_user_model)
    response = client.post(
        "/admin/models_registry/modelalias/add/",
        {"model": iris.model_id, "name": name, "version": iris.pk, **_no_moves()},
    )
    assert response.status_code == 200
    assert "name" in response.context["adminform"].form.errors
    assert ModelAlias.objects.count() == 1  # iris's own production alias


def test_the_admin_adds_and_moves_an_alias_within_its_model(
    db: Any, django_user_model: Any, iris: ModelVersion
) -> None:
    client = _admin(django_user_model)
    second = model_version_register(model=iris.model, content=model_bytes("iris"))
    added = client.post(
        "/admin/models_registry/modelalias/add/",
        {"model": iris.model_id, "name": "canary", "version": second.pk, **_no_moves()},
    )
    assert added.status_code == 302
    alias = ModelAlias.objects.get(name="canary")
    change = f"/admin/models_registry/modelalias/{alias.pk}/change/"
    offered = client.get(change).context["adminform"].form.fields["version"].queryset
    assert set(offered) == {iris, second}  # only this model's ready versions
    assert client.post(change, {"version": iris.pk, **_no_moves()}).status_code == 302
    alias.refresh_from_db()
    assert (alias.model_id, alias.name, alias.version_id) == (iris.model_id, "canary", iris.pk)
    assert [m.to_version_id for m in alias.moves.all()] == [iris.pk, second.pk]


# --- Links ------------------------------------------------------------------------------------------


def test_the_admin_links_to_the_portal_as_its_site(db: Any, django_user_model: Any) -> None:
    page = _admin(django_user_model).get("/admin/").content.decode()
    assert '<a href="/portal/">View site</a>' in page


def test_the_admin_shows_a_model_file_by_name_with_a_staff_only_download(
    db: Any, django_user_model: Any, iris: ModelVersion
) -> None:
    client = _admin(django_user_model)
    page = client.get(f"/admin/models_registry/modelversion/{iris.pk}/change/").content.decode()
    download = f"/admin/models_registry/modelversion/{iris.pk}/file/"
    assert f'{iris.file.name} (<a href="{download}">download</a>)' in page
    assert "/media/" not in page
    response = client.get(download)
    assert response.status_code == 200
    assert response["Content-Disposition"] == 'attachment; filename="iris-1.onnx"'
    assert b"".join(response.streaming_content) == iris.file.open("rb").read()
    customer = django_user_model.objects.create_user("cust", "cust@example.com", "pw-cust-123")
    outsider = Client()
    outsider.force_login(customer)
    assert outsider.get(download).status_code == 302  # to the admin's login: not staff


@pytest.mark.parametrize("how", ["delete page", "delete action"])
def test_deleting_an_alias_in_the_admin_keeps_its_history_and_records_the_deletion(
    db: Any, django_user_model: Any, iris: ModelVersion, how: str
) -> None:
    """The history of an alias's moves (who, when, from, to) went with it: the audit trail was lost."""
    client = _admin(django_user_model)
    alias = ModelAlias.objects.get(model=iris.model, name="production")
    if how == "delete page":
        response = client.post(f"/admin/models_registry/modelalias/{alias.pk}/delete/", {"post": "yes"}, follow=True)
    else:
        response = client.post(
            "/admin/models_registry/modelalias/",
            {"action": "delete_selected", "_selected_action": [alias.pk], "post": "yes"},
            follow=True,
        )
    assert response.status_code == 200
    assert not ModelAlias.objects.filter(pk=alias.pk).exists()
    history = list(AliasMove.objects.filter(model=iris.model).order_by("moved_at", "id"))
    assert [(m.alias_name, m.from_version_id, m.to_version_id) for m in history] == [
        ("production", None, iris.pk),
        ("production", iris.pk, None),
    ]
    assert history[-1].moved_by.get_username() == "root"
    staff_page = client.get(f"/staff/models/{iris.model.name}/")
    assert staff_page.status_code == 200
    assert "deleted" in staff_page.content.decode()

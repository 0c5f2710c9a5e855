from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from models_registry.models import AliasMove, ModelVersion
from tests.conftest import model_bytes, register


def _upload(client: Client, name: str, content: bytes, **fields):
    return client.post(
        f"/v1/staff/models/{name}/versions",
        {"file": SimpleUploadedFile("m.onnx", content), **fields},
    )


def test_it_lets_staff_upload_a_version_and_move_an_alias(staff_user):
    client = Client()
    client.force_login(staff_user)
    response = _upload(client, "uploaded", model_bytes("diabetes"), aliases="production")
    assert response.status_code == 201, response.content
    assert response.json()["status"] == "ready"
    register("uploaded", "diabetes", aliases=["candidate"])
    moved = client.put(
        "/v1/staff/models/uploaded/aliases/production", data={"version": 2}, content_type="application/json"
    )
    assert moved.status_code == 200, moved.content
    assert moved.json() == {"alias": "production", "version": 2}
    assert AliasMove.objects.filter(alias__name="production", moved_by=staff_user).count() == 2


def test_it_reports_a_failed_validation_to_staff(staff_user):
    client = Client()
    client.force_login(staff_user)
    response = _upload(client, "broken", b"garbage")
    assert response.status_code == 201
    assert response.json()["status"] == "failed"
    assert "Not an ONNX model" in response.json()["failure_reason"]


def test_it_refuses_non_staff_and_api_keys(db, django_user_model, api_key):
    user = django_user_model.objects.create_user("someone", password="pw-123456")
    client = Client()
    client.force_login(user)
    assert _upload(client, "x", model_bytes("diabetes")).status_code == 403
    keyed = Client(HTTP_AUTHORIZATION=f"Bearer {api_key}")
    refused = _upload(keyed, "x", model_bytes("diabetes"))
    assert refused.status_code == 401
    assert refused["WWW-Authenticate"].startswith("Basic")  # staff credentials, not an API key
    assert not ModelVersion.objects.filter(model__name="x").exists()


def test_it_refuses_moving_an_alias_to_a_failed_version(staff_user):
    client = Client()
    client.force_login(staff_user)
    register("iris")
    _upload(client, "iris", b"garbage")
    response = client.put(
        "/v1/staff/models/iris/aliases/production", data={"version": 2}, content_type="application/json"
    )
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "version_not_ready"
    assert response.json()["error"]["param"] == "version"


def test_it_refuses_a_bad_alias_before_registering_anything(staff_user):
    """A 400 must not leave a version behind: it would become `latest` for every caller."""
    from models_registry.models import MLModel

    client = Client()
    client.force_login(staff_user)
    register("iris")
    for aliases in ("latest", "Bad Alias", "staging,1abc"):
        response = _upload(client, "iris", model_bytes("iris"), aliases=aliases)
        assert response.status_code == 400, response.content
        assert response.json()["error"]["param"] == "alias"
        refused_new = _upload(client, "brand-new", model_bytes("iris"), aliases=aliases)
        assert refused_new.status_code == 400
    assert list(ModelVersion.objects.filter(model__name="iris").values_list("number", flat=True)) == [1]
    assert not MLModel.objects.filter(name="brand-new").exists()


def test_register_model_refuses_a_bad_alias_before_registering_anything(db):
    import pytest

    from apiservice.errors import InvalidInput
    from models_registry import services

    model = services.model_get_or_create(name="iris", organisation_id=None)
    with pytest.raises(InvalidInput):
        services.model_version_register(model=model, content=model_bytes("iris"), aliases=["latest"])
    assert not ModelVersion.objects.filter(model=model).exists()


def test_it_reports_a_corrupt_model_as_a_failed_version_not_a_server_error(staff_user):
    """onnx.checker raises plain ValueError/UnicodeDecodeError on some corrupt files: that is a refusal."""
    from tests import onnx_factories

    client = Client()
    client.force_login(staff_user)
    response = _upload(client, "corrupt", onnx_factories.op_type_not_utf8())
    assert response.status_code == 201, response.content
    assert response.json()["status"] == "failed"
    assert "onnx.checker refused" in response.json()["failure_reason"]
    assert not ModelVersion.objects.filter(model__name="corrupt", status=ModelVersion.Status.VALIDATING).exists()


def test_it_adds_a_version_to_a_private_model_without_its_owner_named_again(staff_user, private_model, org):
    """The owner is for new models, as on the portal's staff upload; naming another one is still refused."""
    client = Client()
    client.force_login(staff_user)
    response = _upload(client, "secret-iris", model_bytes("iris"))
    assert response.status_code == 201, response.content
    assert response.json()["version"] == 2
    assert (
        ModelVersion.objects.get(model__name="secret-iris", number=2).model.organisation
        == private_model.model.organisation
    )
    refused = _upload(client, "secret-iris", model_bytes("iris"), organisation=org.slug)
    assert refused.status_code == 422


def test_it_refuses_a_model_over_its_cap_before_reading_the_body(staff_user, settings):
    """The API's multipart cap was the batch files' 512 MiB: a 500 MB "model" was streamed to disk and read
    into memory, then stored as a failed version, before its 200 MiB cap was checked."""
    settings.MODEL_MAX_BYTES = 1024
    client = Client()
    client.force_login(staff_user)
    response = _upload(client, "huge", b"x" * (70 * 1024))
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert not ModelVersion.objects.filter(model__name="huge").exists()


def test_a_signed_in_staff_post_without_its_csrf_token_is_told_so(staff_user, iris):
    """It was 403 `insufficient_scope`, as if staff lacked a permission."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff_user)
    refused = client.put("/v1/staff/models/iris/aliases/staging", data={"version": 1}, content_type="application/json")
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "csrf_failed"
    assert "X-CSRFToken" in refused.json()["error"]["message"]

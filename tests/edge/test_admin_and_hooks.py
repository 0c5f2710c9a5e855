from pathlib import Path

import pytest

from apiservice.celery import app as celery_app
from edge import keys
from edge.models import Bundle
from models_registry.services import alias_move, model_version_register

from .conftest import build_now, digits_bytes


@pytest.fixture
def eager_celery():
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = False


def test_it_lets_staff_rebuild_a_bundle_from_the_admin(
    client, staff_user, iris, eager_celery, django_capture_on_commit_callbacks
):
    from django.contrib.auth.models import Permission

    bundle = build_now(iris, ["fp32"])
    staff_user.user_permissions.add(*Permission.objects.filter(codename__in=["view_bundle", "change_bundle"]))
    client.force_login(staff_user)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = client.post(
            "/admin/edge/bundle/", {"action": "rebuild", "_selected_action": [bundle.pk]}, follow=True
        )
    assert response.status_code == 200
    assert len(callbacks) == 1
    bundle.refresh_from_db()
    assert (bundle.status, bundle.attempts) == ("ready", 2)
    assert client.get(f"/admin/edge/bundle/{bundle.pk}/change/").status_code == 200


def test_it_builds_when_an_alias_moves_if_the_setting_is_on(
    digits, settings, eager_celery, django_capture_on_commit_callbacks
):
    settings.EDGE_BUILD_ON_ALIAS_MOVE = True
    second = model_version_register(model=digits.model, content=digits_bytes())
    with django_capture_on_commit_callbacks(execute=True):
        alias_move(model=digits.model, alias="production", version=second)
    bundle = Bundle.objects.get(model_version=second)
    assert bundle.variants == ["fp32", "int8", "ort"]
    assert bundle.status == "ready"


def test_it_does_not_build_on_alias_moves_by_default(digits, django_capture_on_commit_callbacks):
    second = model_version_register(model=digits.model, content=digits_bytes())
    with django_capture_on_commit_callbacks(execute=True):
        alias_move(model=digits.model, alias="production", version=second)
    assert not Bundle.objects.exists()


def test_it_generates_a_private_development_key_once_when_none_is_configured(settings, tmp_path):
    settings.EDGE_SIGNING_KEY = ""
    settings.EDGE_SIGNING_KEY_FILE = ""
    settings.VAR_DIR = tmp_path
    first = keys.current_key_id()
    path = Path(tmp_path) / "edge-signing-key.pem"
    assert path.exists()
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert keys.current_key_id() == first


def test_it_refuses_a_configured_key_file_that_is_missing(settings, tmp_path):
    from django.core.exceptions import ImproperlyConfigured

    settings.EDGE_SIGNING_KEY = ""
    settings.EDGE_SIGNING_KEY_FILE = str(tmp_path / "nope.pem")
    with pytest.raises(ImproperlyConfigured):
        keys.signing_key()


def test_it_fails_the_system_check_for_an_unusable_signing_key(settings):
    from edge.checks import check_signing_key

    assert check_signing_key(None) == []
    settings.EDGE_SIGNING_KEY = "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n"
    assert [e.id for e in check_signing_key(None)] == ["edge.E001"]

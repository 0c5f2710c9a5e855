"""The cast: an organisation with a real API key, another organisation, a staff user, tiny models."""

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import Client, override_settings

from apiservice import services as org_services
from apiservice.auth import key_cache
from apiservice.models import ALL_SCOPES, Organisation
from inference import runtime
from inference.services import servable_clear_cache
from models_registry import demo_models
from models_registry.models import MLModel, ModelVersion
from models_registry.services import model_get_or_create, model_version_register

_MODEL_BYTES: dict[str, bytes] = {}


def model_bytes(name: str) -> bytes:
    """Demo model files, built once per test session (training is the slow part)."""
    if name not in _MODEL_BYTES:
        _MODEL_BYTES[name] = {
            "iris": demo_models.iris_classifier,
            "diabetes": demo_models.diabetes_regressor,
            "forest": lambda: demo_models.diabetes_forest(trees=10),
            "mlp": lambda: demo_models.dense_mlp((16, 32, 4)),
        }[name]()
    return _MODEL_BYTES[name]


@pytest.fixture(scope="session", autouse=True)
def _media_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Model files and uploads go to a per-session folder that subprocess servers share."""
    root = tmp_path_factory.mktemp("media")
    with override_settings(MEDIA_ROOT=str(root)):
        yield root


@pytest.fixture(autouse=True)
def _fresh_process_caches() -> Iterator[None]:
    key_cache.clear()
    servable_clear_cache()
    yield
    key_cache.clear()
    servable_clear_cache()
    runtime.session_cache().clear()


@pytest.fixture
def org(db: Any) -> Organisation:
    return org_services.organisation_get_or_create(name="Acme Robotics", slug="acme")


@pytest.fixture
def other_org(db: Any) -> Organisation:
    return org_services.organisation_get_or_create(name="Globex", slug="globex")


@pytest.fixture
def api_key(org: Organisation) -> str:
    _, key = org_services.api_key_create(organisation=org, name="test key", scopes=ALL_SCOPES)
    return key


@pytest.fixture
def other_key(other_org: Organisation) -> str:
    _, key = org_services.api_key_create(organisation=other_org, name="other key", scopes=ALL_SCOPES)
    return key


@pytest.fixture
def staff_user(db: Any) -> Any:
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create_user("staff", "staff@example.com", "pw-staff-123", is_staff=True)


def register(
    name: str, kind: str | None = None, *, organisation: Organisation | None = None, aliases: list[str] | None = None
) -> ModelVersion:
    model = model_get_or_create(name=name, organisation_id=organisation.pk if organisation else None)
    return model_version_register(model=model, content=model_bytes(kind or name), aliases=aliases or ["production"])


@pytest.fixture
def iris(db: Any) -> ModelVersion:
    return register("iris")


@pytest.fixture
def diabetes(db: Any) -> ModelVersion:
    return register("diabetes")


@pytest.fixture
def private_model(other_org: Organisation) -> ModelVersion:
    """A model private to `other_org`: invisible (404) to `org`."""
    return register("secret-iris", "iris", organisation=other_org)


class APIClient(Client):
    """Django's test client speaking JSON with a bearer key."""

    def __init__(self, key: str | None = None, **defaults: Any) -> None:
        if key:
            defaults["HTTP_AUTHORIZATION"] = f"Bearer {key}"
        super().__init__(**defaults)

    def post_json(self, path: str, body: Any, **extra: Any) -> Any:
        import json

        return self.post(path, data=json.dumps(body), content_type="application/json", **extra)


@pytest.fixture
def client_for() -> Any:
    return APIClient


@pytest.fixture
def api(api_key: str) -> APIClient:
    return APIClient(api_key)


def all_models() -> list[MLModel]:
    return list(MLModel.objects.all())


os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # Playwright's sync API runs an event loop


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    path = Path(__file__).resolve().parent.parent / "test-artifacts"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="session")
def live_gunicorn(
    django_db_setup: Any, django_db_blocker: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    """A real gunicorn (2 sync workers) on the test database. Use with `transactional_db`."""
    from tests import live

    with django_db_blocker.unblock(), live.gunicorn(tmp_path_factory.mktemp("gunicorn")) as server:
        yield server


@pytest.fixture(scope="session")
def celery_worker(
    django_db_setup: Any, django_db_blocker: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    """A real Celery worker process on the test database and this xdist worker's Redis broker."""
    from tests import live

    with django_db_blocker.unblock(), live.celery_worker(tmp_path_factory.mktemp("celery")) as worker:
        yield worker

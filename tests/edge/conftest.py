"""Edge fixtures: a signing key generated for this test session, the digits MLP, bundle helpers."""

import io
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge import services
from edge.models import Bundle
from models_registry import demo_models
from models_registry.models import ModelVersion
from models_registry.services import model_get_or_create, model_version_register
from tests import conftest as root

# Generated here, never stored in the repo. Exported before any server starts, so the Celery
# worker subprocess signs with the same key as the tests verify against.
TEST_SIGNING_KEY = Ed25519PrivateKey.generate()
TEST_SIGNING_PEM = TEST_SIGNING_KEY.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
).decode()
os.environ["EDGE_SIGNING_KEY"] = TEST_SIGNING_PEM


@pytest.fixture(autouse=True)
def _signing_key(settings: Any) -> None:
    settings.EDGE_SIGNING_KEY = TEST_SIGNING_PEM


@pytest.fixture
def public_key_pem() -> bytes:
    return TEST_SIGNING_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def digits_bytes() -> bytes:
    if "digits" not in root._MODEL_BYTES:
        root._MODEL_BYTES["digits"] = demo_models.digits_mlp()
    return root._MODEL_BYTES["digits"]


def register_digits(name: str = "digits", organisation: Any = None) -> ModelVersion:
    model = model_get_or_create(name=name, organisation_id=organisation.pk if organisation else None)
    return model_version_register(model=model, content=digits_bytes(), aliases=["production"])


@pytest.fixture
def digits(db: Any) -> ModelVersion:
    return register_digits()


def build_now(version: ModelVersion, variants: list[str] | None = None) -> Bundle:
    """Request a bundle and build it in this process (the Celery flow has its own live test)."""
    bundle = services.bundle_request(version=version, variants=variants)
    services.bundle_build(bundle_id=bundle.pk)
    bundle.refresh_from_db()
    return bundle


def zip_members(bundle: Bundle) -> dict[str, bytes]:
    with bundle.file.open("rb") as handle, zipfile.ZipFile(io.BytesIO(handle.read())) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def extract(bundle: Bundle, target: Path) -> Path:
    with bundle.file.open("rb") as handle, zipfile.ZipFile(io.BytesIO(handle.read())) as archive:
        archive.extractall(target)
    return target


@pytest.fixture
def key_file(tmp_path: Path, public_key_pem: bytes) -> Iterator[Path]:
    path = tmp_path / "modelmeter.pem"
    path.write_bytes(public_key_pem)
    return path

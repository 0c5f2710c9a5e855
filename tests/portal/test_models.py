"""The customer catalogue and a model's page with its playground."""

from typing import Any

import pytest
from django.test import Client

from apiservice.models import Organisation
from models_registry.models import ModelVersion
from models_registry.services import model_get_or_create, model_version_register
from tests import onnx_factories
from tests.conftest import model_bytes


def test_it_lists_only_models_with_a_ready_version(
    owner_client: Client, staff_client: Client, org: Organisation, iris: ModelVersion
) -> None:
    failed = model_get_or_create(name="broken")
    assert model_version_register(model=failed, content=b"not onnx").status == "failed"
    model_get_or_create(name="empty", organisation_id=org.pk)
    listed = [m.name for m in owner_client.get("/portal/models/").context["models"]]
    assert listed == ["iris"]
    assert owner_client.get("/portal/").context["models"] == 1
    staff = staff_client.get("/staff/models/").content.decode()
    assert all(name in staff for name in ("iris", "broken", "empty"))  # staff still see everything


def test_it_lists_a_model_again_once_a_version_is_ready(owner_client: Client, iris: Any) -> None:
    failed = model_get_or_create(name="second-try")
    model_version_register(model=failed, content=b"not onnx")
    assert "second-try" not in [m.name for m in owner_client.get("/portal/models/").context["models"]]
    model_version_register(model=failed, content=model_bytes("iris"))
    assert "second-try" in [m.name for m in owner_client.get("/portal/models/").context["models"]]


def test_a_model_hidden_from_the_catalogue_is_not_found_by_url(
    owner_client: Client, staff_client: Client, org: Organisation, iris: ModelVersion, private_model: ModelVersion
) -> None:
    failed = model_get_or_create(name="broken")
    model_version_register(model=failed, content=b"not onnx")
    model_get_or_create(name="empty", organisation_id=org.pk)
    assert owner_client.get("/portal/models/iris/").status_code == 200
    for hidden in ("broken", "empty", private_model.model.name, "nope"):
        assert owner_client.get(f"/portal/models/{hidden}/").status_code == 404, hidden
    assert staff_client.get("/staff/models/broken/").status_code == 200  # staff still see everything


@pytest.mark.parametrize(
    "factory",
    [onnx_factories.scalar, onnx_factories.fixed_two_rows, onnx_factories.zero_width, onnx_factories.two_inputs],
    ids=["scalar", "fixed-two-rows", "zero-width", "two-inputs"],
)
def test_the_example_request_on_a_models_page_is_one_the_api_accepts(
    owner_client: Client, api: Any, db: Any, factory: Any
) -> None:
    """The example (and playground) body was always one `instances` row with dynamic and zero dimensions
    as 1: a 400 for a scalar input, a fixed first dimension other than 1, or a dimension of 0."""
    version = model_version_register(model=model_get_or_create(name="odd-shape"), content=factory())
    assert version.status == "ready", version.failure_reason
    body = owner_client.get("/portal/models/odd-shape/").context["examples"][version.number]

    response = api.post("/v1/models/odd-shape/versions/1:predict", data=body, content_type="application/json")

    assert response.status_code == 200, response.content

"""The OpenAPI schema states the limits the server enforces, so a schema-valid request is not refused."""

import pytest
from drf_spectacular.generators import SchemaGenerator


@pytest.fixture(scope="module")
def schema() -> dict:
    return SchemaGenerator().get_schema(request=None, public=True)


def parameter(schema: dict, path: str, method: str, name: str) -> dict:
    found = [p for p in schema["paths"][path][method]["parameters"] if p["name"] == name]
    assert found, f"{method.upper()} {path} does not document {name}"
    return found[0]["schema"]


def component(schema: dict, ref: str) -> dict:
    return schema["components"]["schemas"][ref.rsplit("/", 1)[-1]]


LISTS = [
    "/v1/models",
    "/v1/models/{model}/versions",
    "/v1/models/{model}/versions/{version}/bundles",
    "/v1/files",
    "/v1/batches",
]


@pytest.mark.parametrize("path", LISTS)
def test_it_bounds_the_page_size_as_the_server_does(schema, path):
    limit = parameter(schema, path, "get", "limit")
    assert (limit["minimum"], limit["maximum"]) == (1, 100)


@pytest.mark.parametrize(
    "path",
    [
        "/v1/models/{model}:predict",
        "/v1/models/{model}/versions/{version}:predict",
        "/v1/models/{model}/labels/{alias}:predict",
        "/v2/models/{model}/infer",
        "/v2/models/{model}/versions/{version}/infer",
        "/v1/batches",
    ],
)
def test_it_bounds_the_idempotency_key_as_the_server_does(schema, path):
    key = parameter(schema, path, "post", "Idempotency-Key")
    assert (key["minLength"], key["maxLength"]) == (1, 255)
    assert "pattern" in key  # printable characters only


def test_it_says_an_infer_request_needs_at_least_one_input(schema):
    body = schema["paths"]["/v2/models/{model}/infer"]["post"]["requestBody"]["content"]["application/json"]
    assert component(schema, body["schema"]["$ref"])["properties"]["inputs"]["minItems"] == 1


def test_it_says_a_bundle_request_names_at_least_one_variant(schema):
    post = schema["paths"]["/v1/models/{model}/versions/{version}/bundles"]["post"]
    body = post["requestBody"]["content"]["application/json"]
    assert component(schema, body["schema"]["$ref"])["properties"]["variants"]["minItems"] == 1

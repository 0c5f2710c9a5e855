import base64

import pytest

from billing.models import UsageRecord
from models_registry.models import ModelAlias
from models_registry.services import alias_move, model_get_or_create, model_version_register
from tests import onnx_factories
from tests.conftest import register

IRIS_ROW = [5.1, 3.5, 1.4, 0.2]
VIRGINICA = [6.7, 3.0, 5.2, 2.3]


def test_it_predicts_iris_rows_with_labels_and_probabilities(api, iris):
    response = api.post_json("/v1/models/iris:predict", {"instances": [IRIS_ROW, VIRGINICA]})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["model_version"] == "1"
    assert [p["label"] for p in body["predictions"]] == ["setosa", "virginica"]
    assert abs(sum(body["predictions"][0]["probabilities"]) - 1.0) < 1e-5
    assert response["X-Model-Version"] == "1"


def test_instances_and_inputs_give_the_same_numbers(api, iris):
    rows = api.post_json("/v1/models/iris:predict", {"instances": [IRIS_ROW, VIRGINICA]}).json()
    columns = api.post_json("/v1/models/iris:predict", {"inputs": [IRIS_ROW, VIRGINICA]}).json()
    keyed = api.post_json("/v1/models/iris:predict", {"inputs": {"input": [IRIS_ROW, VIRGINICA]}}).json()
    assert columns == keyed
    assert columns["outputs"]["label"] == [p["label"] for p in rows["predictions"]]
    assert columns["outputs"]["probabilities"] == [p["probabilities"] for p in rows["predictions"]]


def test_a_single_output_model_answers_plain_values(api, diabetes):
    body = api.post_json("/v1/models/diabetes:predict", {"instances": [[0.0] * 10]}).json()
    assert len(body["predictions"]) == 1 and len(body["predictions"][0]) == 1
    assert isinstance(body["predictions"][0][0], float)


def test_keyed_instances_feed_several_inputs(api, db):
    model_version_register(
        model=model_get_or_create(name="pair"), content=onnx_factories.two_inputs(), aliases=["production"]
    )
    body = api.post_json(
        "/v1/models/pair:predict",
        {
            "instances": [
                {"a": [1.0, 2.0], "b": [10.0, 20.0], "count": [7]},
                {"a": [0.5, 0.5], "b": [0.5, 0.5], "count": [3]},
            ]
        },
    ).json()
    assert body["predictions"] == [{"sum": [11.0, 22.0], "count_out": [7]}, {"sum": [1.0, 1.0], "count_out": [3]}]


def test_it_routes_by_version_number_alias_and_default(api, db):
    first = register("iris")
    second = register("iris", aliases=["staging"])
    assert second.number == 2
    by = {
        "/v1/models/iris:predict": "1",  # `production` is moved back to v1 below
        "/v1/models/iris/versions/2:predict": "2",
        "/v1/models/iris/versions/latest:predict": "2",
        "/v1/models/iris/versions/staging:predict": "2",
        "/v1/models/iris/labels/staging:predict": "2",
    }
    alias_move(model=first.model, alias="production", version=first)
    for path, version in by.items():
        response = api.post_json(path, {"instances": [IRIS_ROW]})
        assert response.status_code == 200, (path, response.content)
        assert response.json()["model_version"] == version, path
        assert response["X-Model-Version"] == version


def test_without_a_production_alias_the_default_is_the_latest_ready_version(api, db):
    register("iris", aliases=["candidate"])
    register("iris", aliases=["candidate"])
    assert api.post_json("/v1/models/iris:predict", {"instances": [IRIS_ROW]}).json()["model_version"] == "2"


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("/v1/models/nope:predict", "model_not_found"),
        ("/v1/models/iris/versions/9:predict", "version_not_found"),
        ("/v1/models/iris/labels/ghost:predict", "version_not_found"),
    ],
)
def test_unknown_models_and_versions_are_404(api, iris, path, code):
    response = api.post_json(path, {"instances": [IRIS_ROW]})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == code


def test_a_failed_version_is_not_served(api, iris):
    model_version_register(model=iris.model, content=b"garbage")
    response = api.post_json("/v1/models/iris/versions/2:predict", {"instances": [IRIS_ROW]})
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "version_not_ready"


def test_it_records_one_ledger_row_per_call(api, iris):
    api.post_json("/v1/models/iris:predict", {"instances": [IRIS_ROW] * 3})
    api.get("/v1/models")
    rows = {row.face: row for row in UsageRecord.objects.all()}
    predict = rows["v1-predict"]
    assert (predict.units, predict.status_code, predict.meter) == (3, 200, "online_predictions")
    assert predict.model_version_id == iris.pk and predict.billable
    assert (rows["metadata"].units, rows["metadata"].billable) == (0, False)


@pytest.mark.parametrize("query", ["", "?format=json"])  # the gateway's fast route, then DRF
def test_an_unknown_alias_is_named_as_the_alias_it_is(api, iris, query):
    response = api.post_json(f"/v1/models/iris/labels/ghost:predict{query}", {"instances": [IRIS_ROW]})
    assert response.status_code == 404
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("version_not_found", "alias")
    assert "alias 'ghost'" in error["message"]


@pytest.mark.parametrize("query", ["", "?format=json"])
@pytest.mark.parametrize("label", ["1", "latest"])
def test_a_label_is_only_ever_an_alias_not_a_version_number_or_latest(api, iris, query, label):
    named = "1" if label == "1" else "latest"  # served (and cached) under /versions/ first
    assert (
        api.post_json(f"/v1/models/iris/versions/{named}:predict{query}", {"instances": [IRIS_ROW]}).status_code == 200
    )
    response = api.post_json(f"/v1/models/iris/labels/{label}:predict{query}", {"instances": [IRIS_ROW]})
    assert response.status_code == 404
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("version_not_found", "alias")
    assert f"alias '{label}'" in error["message"]


@pytest.mark.parametrize("query", ["", "?format=json"])
def test_an_alias_on_a_version_that_is_not_ready_is_named_as_the_alias(api, iris, query):
    failed = model_version_register(model=iris.model, content=b"garbage")
    ModelAlias.objects.filter(model=iris.model, name="production").update(version=failed)
    response = api.post_json(f"/v1/models/iris/labels/production:predict{query}", {"instances": [IRIS_ROW]})
    assert response.status_code == 409
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("version_not_ready", "alias")


@pytest.mark.parametrize("query", ["", "?format=json"])
def test_an_unknown_or_failed_version_is_still_named_version(api, iris, query):
    model_version_register(model=iris.model, content=b"garbage")
    missing = api.post_json(f"/v1/models/iris/versions/9:predict{query}", {"instances": [IRIS_ROW]})
    assert (missing.status_code, missing.json()["error"]["param"]) == (404, "version")
    failed = api.post_json(f"/v1/models/iris/versions/2:predict{query}", {"instances": [IRIS_ROW]})
    assert (failed.status_code, failed.json()["error"]["param"]) == (409, "version")


def _b64(data: bytes) -> dict[str, str]:
    return {"b64": base64.b64encode(data).decode()}


@pytest.fixture
def pairs(db):
    return model_version_register(model=model_get_or_create(name="pairs"), content=onnx_factories.string_pairs())


def test_strings_may_come_base64_encoded_as_tf_serving_sends_them(api, pairs):
    rows = {"instances": [[_b64("héllo".encode()), "plain"]]}
    columns = {"inputs": {"pair": [[_b64(b"a"), _b64(b"")]]}}
    assert api.post_json("/v1/models/pairs:predict", rows).json()["predictions"] == [["héllo", "plain"]]
    assert api.post_json("/v1/models/pairs:predict", columns).json()["outputs"] == [["a", ""]]


def test_a_base64_row_of_a_one_string_model_is_a_value_not_an_object_keyed_by_input(api, db):
    model_version_register(model=model_get_or_create(name="texts"), content=onnx_factories.string_column())
    response = api.post_json("/v1/models/texts:predict", {"instances": [_b64(b"one"), {"text": "two"}]})
    assert response.status_code == 400  # rows of one form: the first is a value, so the second is refused
    response = api.post_json("/v1/models/texts:predict", {"instances": [_b64(b"one"), "two"]})
    assert response.json()["predictions"] == ["one", "two"]


def test_strings_nested_deeper_than_any_tensor_are_a_400_not_a_500(api, pairs):
    """The walk looking for `{"b64": ...}` values went down 1000 lists to Python's recursion limit."""
    body = '{"instances": ' + "[" * 1000 + '"a"' + "]" * 1000 + "}"  # json.dumps itself stops short of this
    response = api.post("/v1/models/pairs:predict", data=body, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "instances.pair"


@pytest.mark.parametrize(
    ("value", "fragment"),
    [({"b64": "not base64!"}, "not valid base64"), (_b64(b"\xff\xfe"), "not UTF-8 text")],
    ids=["not-base64", "not-utf8"],
)
def test_a_base64_string_that_does_not_decode_to_text_is_a_400_naming_the_input(api, pairs, value, fragment):
    response = api.post_json("/v1/models/pairs:predict", {"instances": [[value, "x"]]})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_input" and error["param"] == "instances.pair"
    assert fragment in error["message"]


def test_an_output_without_one_entry_per_row_is_a_400_in_the_row_form_and_whole_in_columns(api, db):
    """It was a 500 (the row form indexed the scalar `total` per row), not billed as a prediction."""
    model_version_register(model=model_get_or_create(name="totals"), content=onnx_factories.rows_and_total())
    response = api.post_json("/v1/models/totals:predict", {"instances": [[1, 2], [3, 4]]})
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("output_not_per_row", "instances")
    assert "'total'" in error["message"] and "'inputs'" in error["message"]
    columns = api.post_json("/v1/models/totals:predict", {"inputs": [[1, 2], [3, 4]]}).json()
    assert columns["outputs"] == {"same": [[1.0, 2.0], [3.0, 4.0]], "total": 10.0}
    assert list(UsageRecord.objects.order_by("id").values_list("status_code", "units")) == [(400, 0), (200, 2)]


def test_a_model_with_a_fixed_batch_answers_one_prediction_per_instance(api, db):
    model_version_register(model=model_get_or_create(name="threes"), content=onnx_factories.fixed_rows())
    response = api.post_json("/v1/models/threes:predict", {"instances": [[1, 2], [3, 4], [5, 6]]})
    assert response.json()["predictions"] == [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]


@pytest.mark.parametrize(("signature", "status"), [("serving_default", 200), ("classify", 400), (3, 400)])
def test_the_only_signature_name_a_model_answers_to_is_serving_default(api, iris, signature, status):
    """Any `signature_name` was answered by the model's one computation, as if the client had named it."""
    response = api.post_json("/v1/models/iris:predict", {"signature_name": signature, "instances": [IRIS_ROW]})
    assert response.status_code == status
    if status == 400:
        assert response.json()["error"]["param"] == "signature_name"

"""Every input rule gives a clear 4xx naming the input, before ONNX Runtime runs; never a 500."""

import pytest

from billing.models import UsageRecord
from models_registry.services import model_get_or_create, model_version_register
from tests import onnx_factories

ROW = [5.1, 3.5, 1.4, 0.2]


@pytest.mark.parametrize(
    ("body", "status", "code", "param"),
    [
        ({"instances": [ROW], "inputs": [ROW]}, 400, "ambiguous_body", None),
        ({}, 400, "invalid_input", "instances"),
        ({"instances": []}, 400, "invalid_input", "instances"),
        ({"instances": "abc"}, 400, "invalid_input", "instances"),
        ({"instances": [[1.0, 2.0, 3.0]]}, 400, "invalid_input", "instances.input"),
        ({"instances": [ROW, [1.0, 2.0]]}, 400, "invalid_input", "instances.input"),
        ({"instances": [["a", "b", "c", "d"]]}, 400, "invalid_input", "instances.input"),
        ({"instances": [[True, False, True, False]]}, 400, "invalid_input", "instances.input"),
        ({"instances": [[1.0, None, 2.0, 3.0]]}, 400, "invalid_input", "instances.input"),
        ({"instances": [[5.1, True, 1.4, 0.2]]}, 400, "invalid_input", "instances.input"),
        ({"instances": [{"nope": ROW}]}, 400, "invalid_input", "instances.0.nope"),
        ({"inputs": {"input": [ROW], "extra": [1]}}, 400, "invalid_input", "inputs.extra"),
        ({"inputs": [[ROW]]}, 400, "invalid_input", "inputs.input"),
        ({"instances": [[1e39, 1.0, 1.0, 1.0]]}, 400, "non_finite_input", "instances.input"),
        ([ROW], 400, "invalid_input", None),
    ],
    ids=[
        "both-forms",
        "empty-object",
        "empty-instances",
        "instances-not-list",
        "too-few-features",
        "ragged",
        "strings",
        "booleans",
        "null",
        "a-boolean-among-numbers",
        "unknown-input-name",
        "extra-input",
        "wrong-rank",
        "overflow-to-infinity",
        "body-not-object",
    ],
)
def test_it_refuses_bad_predict_bodies(api, iris, body, status, code, param):
    response = api.post_json("/v1/models/iris:predict", body)
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert error["code"] == code
    assert error["param"] == param
    assert error["message"]


def test_it_refuses_a_nan_token_which_is_not_json(api, iris):
    body = b'{"instances": [[NaN, 1.0, 1.0, 1.0]]}'
    response = api.post("/v1/models/iris:predict", data=body, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"


def test_it_passes_non_finite_values_when_the_policy_allows(api, iris, settings):
    settings.INFERENCE_NAN_POLICY = "allow"
    response = api.post_json("/v1/models/iris:predict", {"instances": [[1e39, 1.0, 1.0, 1.0]]})
    assert response.status_code == 200


def test_it_refuses_too_many_rows(api, iris, settings):
    settings.INFERENCE_MAX_ROWS = 5
    response = api.post_json("/v1/models/iris:predict", {"instances": [ROW] * 6})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "too_many_rows"
    assert "at most 5" in response.json()["error"]["message"]


def test_it_refuses_broken_json_and_empty_bodies(api, iris):
    broken = api.post("/v1/models/iris:predict", data=b'{"instances": [', content_type="application/json")
    assert broken.status_code == 400 and broken.json()["error"]["code"] == "invalid_json"
    empty = api.post("/v1/models/iris:predict", data=b"", content_type="application/json")
    assert empty.status_code == 400


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"instances": [{"a": [1.0, 2.0], "b": [1.0, 2.0]}]}, "lacks input 'count'"),
        ({"instances": [[1.0, 2.0]]}, "several inputs"),
        ({"instances": [{"a": [1.0, 2.0], "b": [1.0, 2.0], "count": [1.5]}]}, "expects integers"),
        ({"inputs": {"a": [[1.0, 2.0]], "b": [[1.0, 2.0], [3.0, 4.0]], "count": [[1]]}}, "same number of rows"),
        ({"instances": [{"a": [1.0, 2.0], "b": [1.0, 2.0], "count": [2**70]}]}, "out of range"),
        (
            {
                "instances": [
                    {"a": [1.0, 2.0], "b": [1.0, 2.0], "count": [2**63]},
                    {"a": [1.0, 2.0], "b": [1.0, 2.0], "count": [2]},
                ]
            },
            "out of range",
        ),
        (
            {
                "instances": [
                    {"a": [1.0, 2.0], "b": [1.0, 2.0], "count": [-(2**63) - 1]},
                    {"a": [1.0, 2.0], "b": [1.0, 2.0], "count": [2]},
                ]
            },
            "not written as an integer",
        ),
        (
            {
                "instances": [
                    {"a": [1.0, 2.0], "b": [1.0, 2.0], "count": [1]},
                    {"a": [1.0, 2.0], "b": [1.0, 2.0], "count": [False]},
                ]
            },
            "got booleans",
        ),
        ({"instances": [{"a": [1.0, 2.0], "b": [1.0, 2.0], "count": [2**40]}], "x": 1}, None),
    ],
    ids=[
        "missing-input",
        "rows-for-several-inputs",
        "decimal-for-int64",
        "mismatched-rows",
        "int64-overflow",
        "int64-one-past-the-top-beside-a-small-value",
        "int64-one-past-the-bottom-which-the-parser-rounds",
        "boolean-for-int64",
        "ok",
    ],
)
def test_it_checks_every_input_of_a_multi_input_model(api, db, body, message):
    model_version_register(
        model=model_get_or_create(name="pair"), content=onnx_factories.two_inputs(), aliases=["production"]
    )
    response = api.post_json("/v1/models/pair:predict", body)
    if message is None:  # the control: a well-formed body (extra top-level keys are ignored) passes
        assert response.status_code == 200, response.content
        assert response.json()["predictions"] == [{"sum": [2.0, 4.0], "count_out": [2**40]}]
        return
    assert response.status_code == 400, response.content
    assert message in response.json()["error"]["message"]


def test_a_large_int64_beside_a_decimal_keeps_its_exact_value(api, db):
    """numpy reads [2**53 + 1, 1.0] as floats, which would round the first value; it is checked exactly."""
    model_version_register(
        model=model_get_or_create(name="pair"), content=onnx_factories.two_inputs(), aliases=["production"]
    )
    rows = [
        {"a": [1.0, 2.0], "b": [1.0, 2.0], "count": [2**53 + 1]},
        {"a": [1.0, 2.0], "b": [1.0, 2.0], "count": [1.0]},
    ]
    response = api.post_json("/v1/models/pair:predict", {"instances": rows})
    assert response.status_code == 200, response.content
    assert [p["count_out"] for p in response.json()["predictions"]] == [[2**53 + 1], [1]]


def test_bad_inputs_are_recorded_in_the_ledger_as_unbilled(api, iris):
    api.post_json("/v1/models/iris:predict", {"instances": [[1.0]]})
    row = UsageRecord.objects.get()
    assert (row.status_code, row.units, row.meter) == (400, 0, "")


@pytest.mark.parametrize("data", [["a", 1], ["a", True], [["a", "b"], ["c", 2.5]], ["a", None]])
def test_a_string_input_refuses_numbers_and_booleans_among_its_strings(data):
    """numpy would turn them into "1", "True", "2.5" and the model would run on text nobody sent."""
    from apiservice.errors import InvalidInput
    from inference.tensors import to_array

    with pytest.raises(InvalidInput) as refused:
        to_array(data, datatype="BYTES", name="text", param="instances.text")
    assert "text" in refused.value.message


def test_a_string_input_takes_strings():
    from inference.tensors import to_array

    assert to_array([["a", "b"], ["c", ""]], datatype="BYTES", name="text", param="p").tolist() == [
        ["a", "b"],
        ["c", ""],
    ]


@pytest.mark.parametrize("body", [{"inputs": None}, {"inputs": {"input": None}}])
def test_a_null_input_is_called_null(api, iris, body):
    """It was "Input 'input' mixes value types or holds numbers out of range."."""
    response = api.post_json("/v1/models/iris:predict", body)
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "Input 'input' is null; send its values."


def test_a_string_keeps_its_trailing_nul_characters(api, db):
    """numpy's fixed-width strings drop trailing NULs: "ab\\u0000" reached the model as "ab" (binary OIP kept it)."""
    model_version_register(model=model_get_or_create(name="pairs"), content=onnx_factories.string_pairs())
    response = api.post_json("/v1/models/pairs:predict", {"instances": [["ab\u0000", "\u0000"]]})
    assert response.status_code == 200, response.content
    assert response.json()["predictions"] == [["ab\u0000", "\u0000"]]


def _assert_refused_when_it_ran(response):
    """The 400 for inputs ONNX Runtime refused while running, in either face's error shape, recorded unbilled."""
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    message = error["message"] if isinstance(error, dict) else error
    assert "refused these inputs" in message
    assert UsageRecord.objects.order_by("-id").values_list("status_code", "units").first() == (400, 0)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/models/embedding:predict", {"instances": [[1, 99]]}),
        (
            "/v2/models/embedding/infer",
            {"inputs": [{"name": "ids", "datatype": "INT64", "shape": [1, 2], "data": [1, 99]}]},
        ),
    ],
    ids=["predict", "infer"],
)
def test_an_input_the_model_refuses_when_it_runs_is_a_400_not_a_500(api, db, path, body):
    """An index past the end of an embedding table passes every signature check; ONNX Runtime refuses it."""
    model_version_register(
        model=model_get_or_create(name="embedding"), content=onnx_factories.embedding_lookup(), aliases=["production"]
    )
    assert api.post_json("/v1/models/embedding:predict", {"instances": [[1, 9]]}).status_code == 200

    response = api.post_json(path, body)

    _assert_refused_when_it_ran(response)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/models/two-rows:predict", {"instances": [[1, 2], [3, 4], [5, 6]]}),
        (
            "/v2/models/two-rows/infer",
            {"inputs": [{"name": "x", "datatype": "FP32", "shape": [3, 2], "data": [1, 2, 3, 4, 5, 6]}]},
        ),
    ],
    ids=["predict", "infer"],
)
def test_inputs_the_model_fails_on_when_it_runs_are_a_400_not_a_500(api, db, path, body):
    """ONNX Runtime's FAIL while running checked inputs (here a broadcast the model cannot do for 3 rows;
    an integer division by zero is another) was a 500 `internal_error`."""
    model_version_register(
        model=model_get_or_create(name="two-rows"), content=onnx_factories.fails_past_two_rows(), aliases=["production"]
    )
    assert api.post_json("/v1/models/two-rows:predict", {"instances": [[1, 2], [3, 4]]}).status_code == 200

    response = api.post_json(path, body)

    _assert_refused_when_it_ran(response)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/models/as-text:predict", {"instances": [["2.5"], ["lots"]]}),
        (
            "/v2/models/as-text/infer",
            {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2, 1], "data": ["2.5", "lots"]}]},
        ),
    ],
    ids=["predict", "infer"],
)
def test_text_the_model_cannot_parse_as_a_number_is_a_400_not_a_500(api, db, path, body):
    """ONNX Runtime's RUNTIME_EXCEPTION while running checked inputs (Cast of "lots" to FLOAT: "stod") was a
    500 `internal_error`."""
    model_version_register(
        model=model_get_or_create(name="as-text"), content=onnx_factories.numbers_as_text(), aliases=["production"]
    )
    assert api.post_json("/v1/models/as-text:predict", {"instances": [["2.5"]]}).status_code == 200

    response = api.post_json(path, body)

    _assert_refused_when_it_ran(response)

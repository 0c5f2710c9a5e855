"""Large numeric bodies parsed straight to numpy answer exactly as the general (orjson) path would."""

import json

import numpy as np
import orjson
import pytest

from inference import numeric_json
from inference.tensors import predict_feeds

WIDTH = 10  # the diabetes model's features


def dense_rows(count: int = 80, *, seed: int = 1) -> list[list[float]]:
    rng = np.random.default_rng(seed)
    return np.round(rng.standard_normal((count, WIDTH)) * 0.05, 6).tolist()


def body_of(value: object) -> bytes:
    raw = json.dumps(value).encode()
    assert len(raw) >= numeric_json.MIN_BYTES, "the case must be large enough for the fast path"
    return raw


def matrix_of(raw: bytes) -> np.ndarray | None:
    parsed = numeric_json.predict_matrix(raw)
    return None if parsed is None else parsed[1]


@pytest.mark.parametrize("form", ["instances", "inputs"])
def test_dense_rows_become_the_matrix_the_general_path_builds(form):
    rows = dense_rows()
    rows[3] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]  # integers mixed in, as JSON encoders write them
    raw = body_of({form: rows})

    parsed = numeric_json.predict_matrix(raw)

    assert parsed is not None
    assert parsed[0] == form
    assert parsed[1].dtype == np.float64 and parsed[1].shape == (80, WIDTH)
    assert np.array_equal(parsed[1], np.asarray(orjson.loads(raw)[form], dtype=np.float64))


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda body: body["instances"][5].pop(), id="ragged-row"),
        pytest.param(lambda body: body["instances"][5].__setitem__(2, [0.5]), id="one-element-list-inside-a-row"),
        pytest.param(lambda body: body["instances"][5].__setitem__(2, True), id="boolean"),
        pytest.param(lambda body: body["instances"][5].__setitem__(2, None), id="null"),
        pytest.param(lambda body: body["instances"][5].__setitem__(2, "[1]"), id="string"),
        pytest.param(lambda body: body["instances"][5].__setitem__(2, 2**53 + 1), id="integer-beyond-float64"),
        pytest.param(lambda body: body.__setitem__("inputs", [[1.0]]), id="inputs-too"),
        pytest.param(lambda body: body.__setitem__("parameters", {}), id="another-key"),
        pytest.param(lambda body: body["instances"].__setitem__(0, {"input": [0.0] * WIDTH}), id="keyed-row"),
        pytest.param(lambda body: body["instances"].__setitem__(0, 1.5), id="scalar-row"),
    ],
)
def test_anything_but_plain_rows_of_numbers_is_left_to_the_general_path(change):
    body = {"instances": dense_rows()}
    change(body)
    assert matrix_of(body_of(body)) is None


def test_duplicate_keys_broken_json_and_small_or_huge_bodies_are_left_to_the_general_path():
    rows = json.dumps(dense_rows())
    assert matrix_of(f'{{"instances": [[1.0]], "instances": {rows}}}'.encode()) is None
    assert matrix_of(f'{{"instances": {rows}'.encode()) is None
    assert matrix_of(json.dumps({"instances": dense_rows(2)}).encode()) is None
    huge = json.dumps({"instances": dense_rows(12_000)}).encode()
    assert len(huge) > numeric_json.MAX_BYTES
    assert matrix_of(huge) is None


def oip_body(rows: list[list[float]], **extra: object) -> dict:
    flat = [value for row in rows for value in row]
    tensor = {"name": "input", "datatype": "FP32", "shape": [len(rows), WIDTH], "data": flat}
    return {"id": "call-1", "inputs": [tensor], **extra}


def test_an_oip_request_is_what_orjson_reads_with_float_data_as_an_array():
    raw = body_of(oip_body(dense_rows(), outputs=[{"name": "variable", "parameters": {"binary_data": False}}]))

    request = numeric_json.oip_request(raw)

    assert request is not None
    expected = orjson.loads(raw)
    data = request["inputs"][0].pop("data")
    assert np.array_equal(data, np.asarray(expected["inputs"][0].pop("data"), dtype=np.float64))
    assert request == expected


def test_an_integer_tensor_keeps_its_data_as_json_values():
    body = oip_body(dense_rows())
    body["inputs"][0]["datatype"] = "INT64"
    body["inputs"][0]["data"] = list(range(1000, 1800))
    raw = body_of(body)
    assert numeric_json.oip_request(raw) == orjson.loads(raw)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda t: t.__setitem__("data", [t["data"][:10], t["data"][10:]]), id="nested-ragged-data"),
        pytest.param(lambda t: t.__setitem__("shape", "80x10"), id="shape-not-a-list"),
        pytest.param(lambda t: t.pop("data"), id="no-data"),
        pytest.param(lambda t: t["data"].__setitem__(7, "x"), id="a-string-in-float-data"),
        pytest.param(lambda t: t.__setitem__("parameters", {"tags": ["a"]}), id="another-array"),
    ],
)
def test_oip_requests_it_cannot_prove_are_left_to_the_general_path(change):
    body = oip_body(dense_rows())
    change(body["inputs"][0])
    assert numeric_json.oip_request(json.dumps(body).encode()) is None


def test_duplicate_keys_in_a_tensor_are_read_as_orjson_reads_them(api, diabetes):
    rows = dense_rows()
    tensor = json.dumps(oip_body(rows)["inputs"][0])
    raw = ('{"inputs": [{"name": "nope", ' + tensor[1:] + "]}").encode()
    assert numeric_json.oip_request(raw) is None
    response = api.post("/v2/models/diabetes/infer", data=raw, content_type="application/json")
    assert response.status_code == 200, response.content


def test_a_bracket_inside_a_string_sends_the_request_to_the_general_path():
    body = oip_body(dense_rows())
    body["id"] = "batch [7]"
    assert numeric_json.oip_request(body_of(body)) is None


# --- Through the API: the same answers and errors as the general path ---------------------------


@pytest.mark.parametrize(("form", "answer"), [("instances", "predictions"), ("inputs", "outputs")])
def test_a_large_predict_body_gets_the_answer_of_the_general_path(api, diabetes, form, answer):
    rows = dense_rows()
    assert matrix_of(body_of({form: rows})) is not None
    fast = api.post_json("/v1/models/diabetes:predict", {form: rows})
    general = api.post_json("/v1/models/diabetes:predict", {form: rows, "parameters": {}})
    assert fast.status_code == general.status_code == 200
    assert fast.json() == general.json()
    assert len(fast.json()[answer]) == 80


def test_a_bad_columnar_body_gets_the_errors_of_the_general_path(api, diabetes):
    rows = dense_rows(120)
    rows[7][2] = True
    fast = api.post_json("/v1/models/diabetes:predict", {"inputs": rows})
    general = api.post_json("/v1/models/diabetes:predict", {"inputs": rows, "parameters": {}})
    assert fast.status_code == general.status_code == 400
    assert fast.json()["error"]["param"] == general.json()["error"]["param"] == "inputs"
    rows[7][2] = 1e39
    fast = api.post_json("/v1/models/diabetes:predict", {"inputs": rows})
    assert fast.status_code == 400 and fast.json()["error"]["code"] == "non_finite_input"
    assert fast.json()["error"]["param"] == "inputs.input"


def test_a_large_infer_body_gets_the_outputs_of_the_general_path(api, diabetes):
    rows = dense_rows()
    fast = api.post_json("/v2/models/diabetes/infer", oip_body(rows))
    general = api.post_json("/v2/models/diabetes/infer", oip_body(rows, parameters={"tags": ["general"]}))
    assert fast.status_code == general.status_code == 200
    assert fast.json()["outputs"] == general.json()["outputs"]
    assert fast.json()["id"] == "call-1"


def test_duplicate_instances_keys_use_the_last_as_orjson_does(api, diabetes):
    rows = dense_rows()
    raw = f'{{"instances": [[1.0]], "instances": {json.dumps(rows)}}}'.encode()
    duplicated = api.post("/v1/models/diabetes:predict", data=raw, content_type="application/json")
    plain = api.post_json("/v1/models/diabetes:predict", {"instances": rows})
    assert duplicated.status_code == 200, duplicated.content
    assert duplicated.json() == plain.json()


@pytest.mark.parametrize(
    ("value", "status", "code"),  # all refused: the fast path leaves them to the general one
    [
        ([0.5], 400, "invalid_input"),
        (None, 400, "invalid_input"),
        ("a", 400, "invalid_input"),
        (1e39, 400, "non_finite_input"),
        (True, 400, "invalid_input"),
    ],
    ids=["nested-list", "null", "string", "overflow-to-infinity", "boolean-among-numbers"],
)
def test_a_value_in_a_large_body_is_judged_as_on_the_general_path(api, diabetes, value, status, code):
    rows = dense_rows(120)  # over 1,024 values: the boolean check's numpy pre-filter runs too
    rows[40][3] = value
    large = api.post_json("/v1/models/diabetes:predict", {"instances": rows})
    general = api.post_json("/v1/models/diabetes:predict", {"instances": rows, "parameters": {}})
    assert large.status_code == general.status_code == status
    assert large.json()["error"]["code"] == general.json()["error"]["code"] == code
    assert large.json()["error"]["message"] == general.json()["error"]["message"]


def test_a_ragged_large_body_is_refused_naming_the_input(api, diabetes):
    rows = dense_rows()
    rows[40].pop()
    response = api.post_json("/v1/models/diabetes:predict", {"instances": rows})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "instances.input"
    assert "ragged" in response.json()["error"]["message"]


def test_the_general_path_reads_the_same_feeds_for_a_fast_body(diabetes):
    rows = dense_rows()
    signature = diabetes.signature
    feeds, form = predict_feeds(orjson.loads(body_of({"instances": rows})), signature=signature)
    matrix = matrix_of(body_of({"instances": rows}))
    assert form == "instances" and matrix is not None
    assert np.array_equal(feeds["input"], matrix.astype(np.float32))


BOM = b"\xef\xbb\xbf"  # RFC 8259 lets a parser refuse it; orjson does, so the fast path must too


@pytest.mark.parametrize(
    ("path", "body_for"),
    [
        ("/v1/models/diabetes:predict", lambda rows: {"instances": rows}),
        ("/v2/models/diabetes/infer", oip_body),
    ],
    ids=["predict", "infer"],
)
def test_a_large_body_with_a_byte_order_mark_is_refused_as_a_small_one_is(api, diabetes, path, body_for):
    small = api.post(path, data=BOM + json.dumps(body_for(dense_rows(1))).encode(), content_type="application/json")
    large = api.post(path, data=BOM + body_of(body_for(dense_rows())), content_type="application/json")
    assert small.status_code == large.status_code == 400, large.content
    assert "byte order mark" in large.content.decode()

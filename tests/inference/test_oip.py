"""Open Inference Protocol v2 over plain HTTP: JSON, binary tensors and the spec's error shape."""

import json
import struct

import numpy as np
import pytest

IRIS_ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]


def _infer(api, path, body, **extra):
    return api.post(path, data=json.dumps(body), content_type="application/json", **extra)


def _tensor(data, shape=(2, 4)):
    return {"name": "input", "datatype": "FP32", "shape": list(shape), "data": data}


def test_health_is_public(client, db):
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}


def test_server_and_model_metadata(api, iris):
    assert api.get("/v2").json()["extensions"] == ["binary_tensor_data"]
    metadata = api.get("/v2/models/iris").json()
    assert metadata["name"] == "iris" and metadata["versions"] == ["1"]
    assert metadata["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]
    assert api.get("/v2/models/iris/versions/production").json()["name"] == "iris"
    assert api.get("/v2/models/iris/ready").json() == {"ready": True}
    assert api.get("/v2/models/iris/versions/1/ready").status_code == 200


def test_infer_accepts_flat_and_nested_data_alike(api, iris):
    flat = _infer(
        api, "/v2/models/iris/infer", {"inputs": [_tensor([value for row in IRIS_ROWS for value in row])]}
    ).json()
    nested = _infer(api, "/v2/models/iris/infer", {"inputs": [_tensor(IRIS_ROWS)]}).json()
    assert flat == nested
    outputs = {o["name"]: o for o in flat["outputs"]}
    assert outputs["label"] == {"name": "label", "datatype": "BYTES", "shape": [2], "data": ["setosa", "virginica"]}
    assert outputs["probabilities"]["shape"] == [2, 3] and len(outputs["probabilities"]["data"]) == 6
    assert flat["model_version"] == "1" and flat["model_name"] == "iris"


def test_infer_echoes_the_id_filters_outputs_and_names_the_concrete_version(api, iris):
    body = {"id": "abc-1", "inputs": [_tensor(IRIS_ROWS)], "outputs": [{"name": "label"}]}
    response = _infer(api, "/v2/models/iris/versions/production/infer", body)
    assert response.json()["id"] == "abc-1"
    assert [o["name"] for o in response.json()["outputs"]] == ["label"]
    assert response.json()["model_version"] == "1"
    assert response["X-Model-Version"] == "1"


@pytest.mark.parametrize("query", ["", "?format=json"])  # the gateway's fast route, then DRF
def test_an_empty_outputs_list_returns_every_output_as_triton_does(api, iris, query):
    response = _infer(api, f"/v2/models/iris/infer{query}", {"inputs": [_tensor(IRIS_ROWS)], "outputs": []})
    assert response.status_code == 200, response.content
    assert [o["name"] for o in response.json()["outputs"]] == ["label", "probabilities"]


def test_infer_works_without_a_content_type(api, iris):
    response = api.generic(
        "POST", "/v2/models/iris/infer", json.dumps({"inputs": [_tensor(IRIS_ROWS)]}).encode(), content_type=""
    )
    assert response.status_code == 200, response.content


def test_binary_tensors_in_and_out(api, iris):
    raw = np.array(IRIS_ROWS, dtype=np.float32).tobytes()
    header = json.dumps(
        {
            "inputs": [
                {"name": "input", "datatype": "FP32", "shape": [2, 4], "parameters": {"binary_data_size": len(raw)}}
            ],
            "outputs": [
                {"name": "probabilities", "parameters": {"binary_data": True}},
                {"name": "label", "parameters": {"binary_data": True}},
            ],
        }
    ).encode()
    response = api.generic(
        "POST",
        "/v2/models/iris/infer",
        header + raw,
        content_type="application/octet-stream",
        HTTP_INFERENCE_HEADER_CONTENT_LENGTH=str(len(header)),
    )
    assert response.status_code == 200, response.content
    head_length = int(response["Inference-Header-Content-Length"])
    head = json.loads(response.content[:head_length])
    blob = response.content[head_length:]
    probs_meta, label_meta = head["outputs"]
    probs = np.frombuffer(blob[: probs_meta["parameters"]["binary_data_size"]], dtype=np.float32).reshape(2, 3)
    assert probs.argmax(axis=1).tolist() == [0, 2]
    labels_blob = blob[probs_meta["parameters"]["binary_data_size"] :]
    assert len(labels_blob) == label_meta["parameters"]["binary_data_size"]
    (first_len,) = struct.unpack_from("<I", labels_blob, 0)
    assert labels_blob[4 : 4 + first_len] == b"setosa"


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"inputs": []}, 400, "non-empty 'inputs'"),
        ({"inputs": [_tensor(IRIS_ROWS, (2, 3))]}, 400, "8 elements"),
        ({"inputs": [{**_tensor(IRIS_ROWS), "datatype": "INT64"}]}, 400, "model expects FP32"),
        ({"inputs": [{**_tensor(IRIS_ROWS), "name": "x"}]}, 400, "Unknown input 'x'"),
        ({"inputs": [_tensor(IRIS_ROWS)], "outputs": [{"name": "nope"}]}, 400, "Unknown output"),
        (
            {
                "inputs": [
                    {"name": "input", "datatype": "FP32", "shape": [2, 4], "parameters": {"binary_data_size": 32}}
                ]
            },
            400,
            "binary_data_size beyond the request body",
        ),
        ({"inputs": [{**_tensor(IRIS_ROWS), "parameters": {"binary_data_size": 32}}]}, 400, "both 'data' and"),
        (
            {
                "inputs": [
                    {"name": "input", "datatype": "FP32", "shape": [2, 4], "parameters": {"binary_data_size": -4}}
                ]
            },
            400,
            "non-negative integer",
        ),
        (
            {
                "inputs": [
                    {"name": "input", "datatype": "FP32", "shape": [2, 4], "parameters": {"binary_data_size": True}}
                ]
            },
            400,
            "non-negative integer",
        ),
        ({"inputs": [{**_tensor(IRIS_ROWS), "shape": [True, 4]}]}, 400, "'shape' of non-negative integers"),
        ({"inputs": [{**_tensor(IRIS_ROWS), "shape": [2, True]}]}, 400, "'shape' of non-negative integers"),
        ({"inputs": [{"name": "input", "shape": [2, 4], "data": IRIS_ROWS}]}, 400, "needs a 'datatype' (FP32)"),
        ({"inputs": [_tensor([[5.1, 3.5], [1.4, 0.2], [6.7, 3.0], [5.2, 2.3]])]}, 400, "nested data of shape [4, 2]"),
        ({"id": 5, "inputs": [_tensor(IRIS_ROWS)]}, 400, "'id' must be a string"),
        ({"inputs": [_tensor([[1, 2, 3, 4], [1, 2]])]}, 400, "ragged"),
        ({"inputs": [_tensor([5.1, 3.5, True, 0.2, 6.7, 3.0, 5.2, 2.3])]}, 400, "got booleans"),
        (  # a string is no boolean: "no" was read as true and the answer came back binary
            {"inputs": [_tensor(IRIS_ROWS)], "parameters": {"binary_data_output": "no"}},
            400,
            "'binary_data_output' must be true or false",
        ),
        (
            {"inputs": [_tensor(IRIS_ROWS)], "outputs": [{"name": "label", "parameters": {"binary_data": 0}}]},
            400,
            "'binary_data' must be true or false",
        ),
        (  # as an input given twice is: the answer would carry the tensor twice
            {"inputs": [_tensor(IRIS_ROWS)], "outputs": [{"name": "label"}, {"name": "label"}]},
            400,
            "Output 'label' is requested twice",
        ),
    ],
    ids=[
        "no-inputs",
        "count-mismatch",
        "datatype",
        "unknown-input",
        "unknown-output",
        "binary-missing",
        "data-and-binary",
        "binary-size-negative",
        "binary-size-boolean",
        "shape-with-a-boolean-first",
        "shape-with-a-boolean-last",
        "no-datatype",
        "nested-unlike-the-shape",
        "id-not-a-string",
        "ragged",
        "a-boolean-among-numbers",
        "binary-output-flag-a-string",
        "binary-data-flag-a-number",
        "an-output-asked-twice",
    ],
)
def test_infer_errors_use_the_spec_shape(api, iris, body, status, fragment):
    response = _infer(api, "/v2/models/iris/infer", body)
    assert response.status_code == status, response.content
    assert set(response.json()) == {"error"}
    assert fragment in response.json()["error"]


def _binary_infer(api, model, tensors, blob, extra=b""):
    header = json.dumps({"inputs": tensors}).encode()
    return api.generic(
        "POST",
        f"/v2/models/{model}/infer",
        header + blob + extra,
        content_type="application/octet-stream",
        HTTP_INFERENCE_HEADER_CONTENT_LENGTH=str(len(header)),
    )


def test_binary_bytes_past_the_last_tensor_are_refused(api, iris):
    raw = np.array(IRIS_ROWS, dtype=np.float32).tobytes()
    tensor = {"name": "input", "datatype": "FP32", "shape": [2, 4], "parameters": {"binary_data_size": len(raw)}}
    assert _binary_infer(api, "iris", [tensor], raw).status_code == 200
    response = _binary_infer(api, "iris", [tensor], raw, extra=b"\0\0\0\0")
    assert response.status_code == 400
    assert "4 bytes after the binary tensors" in response.json()["error"]


def test_binary_booleans_must_be_zero_or_one(api, db):
    from models_registry.services import model_get_or_create, model_version_register
    from tests import onnx_factories

    model_version_register(model=model_get_or_create(name="flags"), content=onnx_factories.bool_and_int8())
    small = {"name": "small", "datatype": "INT8", "shape": [2, 1], "parameters": {"binary_data_size": 2}}
    flag = {"name": "flag", "datatype": "BOOL", "shape": [2, 1], "parameters": {"binary_data_size": 2}}
    good = _binary_infer(api, "flags", [flag, small], b"\x01\x00" + b"\x05\x06")
    assert good.status_code == 200, good.content
    assert {o["name"]: o["data"] for o in good.json()["outputs"]} == {"flag_out": [True, False], "small_out": [5, 6]}
    bad = _binary_infer(api, "flags", [flag, small], b"\x01\x07" + b"\x05\x06")
    assert bad.status_code == 400
    assert "BOOL bytes other than 0 and 1" in bad.json()["error"]


def test_binary_bytes_elements_must_be_utf8_text(api, db):
    """A string tensor reaches the model as text: invalid UTF-8 used to become U+FFFD, a value nobody sent."""
    from models_registry.services import model_get_or_create, model_version_register
    from tests import onnx_factories

    model_version_register(model=model_get_or_create(name="pairs"), content=onnx_factories.string_pairs())

    def elements(*values: bytes) -> bytes:
        return b"".join(struct.pack("<I", len(value)) + value for value in values)

    def pair(blob: bytes) -> dict:
        return {"name": "pair", "datatype": "BYTES", "shape": [1, 2], "parameters": {"binary_data_size": len(blob)}}

    good = _binary_infer(api, "pairs", [pair(elements("é".encode(), b"b"))], elements("é".encode(), b"b"))
    assert good.status_code == 200, good.content
    assert good.json()["outputs"][0]["data"] == ["é", "b"]
    bad = _binary_infer(api, "pairs", [pair(elements(b"\xff", b"b"))], elements(b"\xff", b"b"))
    assert bad.status_code == 400, bad.content
    assert "not valid UTF-8" in bad.json()["error"]


@pytest.mark.parametrize("binary_output", [True, False])
def test_a_client_accepting_octet_stream_gets_its_answer(api, iris, binary_output):
    """Binary outputs are sent as application/octet-stream; asking for that type was a 406."""
    body = {
        "inputs": [_tensor([value for row in IRIS_ROWS for value in row])],
        "parameters": {"binary_data_output": binary_output},
    }
    response = _infer(api, "/v2/models/iris/infer", body, HTTP_ACCEPT="application/octet-stream")
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == ("application/octet-stream" if binary_output else "application/json")
    assert "Inference-Header-Content-Length" in response if binary_output else response.json()["outputs"]


def test_a_client_accepting_only_octet_stream_gets_errors_as_json(api, iris):
    response = _infer(api, "/v2/models/nope/infer", {"inputs": []}, HTTP_ACCEPT="application/octet-stream")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"error": "Model 'nope' not found."}


@pytest.mark.parametrize("binary", [False, True])
def test_a_shape_of_more_dimensions_than_numpy_holds_is_a_400(api, iris, binary):
    """numpy refuses arrays of over 64 dimensions: `reshape` raised ValueError, a 500."""
    if binary:
        tensor = {"name": "input", "datatype": "FP32", "shape": [1] * 70, "parameters": {"binary_data_size": 4}}
        response = _binary_infer(api, "iris", [tensor], b"\0\0\0\0")
    else:
        response = _infer(api, "/v2/models/iris/infer", {"inputs": [_tensor([1.0], shape=[1] * 70)]})
    assert response.status_code == 400, response.content
    assert "the model expects [N, 4]" in response.json()["error"]


@pytest.mark.parametrize("entry", ["label", None, {}, {"name": ["label"]}], ids=["string", "null", "no-name", "list"])
def test_an_outputs_entry_that_is_not_an_object_with_a_name_says_so(api, iris, entry):
    """`"outputs": ["label"]` was answered "Unknown output 'label'; this model's outputs are: label, ..."."""
    response = _infer(api, "/v2/models/iris/infer", {"inputs": [_tensor(IRIS_ROWS)], "outputs": [entry]})
    assert response.status_code == 400
    assert response.json() == {"error": "outputs[0] must be an object with a 'name'."}


def test_an_output_asking_for_classification_is_refused_rather_than_answered_raw(api, iris):
    """tritonclient's `class_count=2` asked for the top two classes (BYTES, shape [2, 2]) and silently got
    the whole FP32 probabilities tensor."""
    outputs = [{"name": "probabilities", "parameters": {"classification": 2, "binary_data": True}}]
    response = _infer(api, "/v2/models/iris/infer", {"inputs": [_tensor(IRIS_ROWS)], "outputs": outputs})
    assert response.status_code == 400
    assert "classification" in response.json()["error"]


def test_oip_header_length_must_not_be_negative(api, iris):
    response = api.generic(
        "POST",
        "/v2/models/iris/infer",
        b"{}",
        content_type="application/octet-stream",
        HTTP_INFERENCE_HEADER_CONTENT_LENGTH="-1",
    )
    assert response.status_code == 400
    assert "non-negative" in response.json()["error"]


def test_v2_not_found_and_not_ready(api, iris):
    from models_registry.services import model_version_register

    assert _infer(api, "/v2/models/nope/infer", {"inputs": [_tensor(IRIS_ROWS)]}).status_code == 404
    model_version_register(model=iris.model, content=b"garbage")
    not_ready = _infer(api, "/v2/models/iris/versions/2/infer", {"inputs": [_tensor(IRIS_ROWS)]})
    assert not_ready.status_code == 503 and "not ready" in not_ready.json()["error"]
    assert api.get("/v2/models/iris/versions/2/ready").status_code == 503
    metadata = api.get("/v2/models/iris/versions/2")  # a failed version has no signature to describe
    assert metadata.status_code == 503 and "not ready" in metadata.json()["error"]


def test_v2_auth_errors_use_the_spec_shape(client, iris):
    response = client.post("/v2/models/iris/infer", data="{}", content_type="application/json")
    assert response.status_code == 401
    assert set(response.json()) == {"error"}

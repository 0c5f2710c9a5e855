"""Conformance: NVIDIA's tritonclient, unmodified and with its defaults, against a live gunicorn."""

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

pytestmark = pytest.mark.live

ROWS = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], dtype=np.float32)


@pytest.fixture
def triton(transactional_db, live_gunicorn, api_key, iris):
    client = httpclient.InferenceServerClient(live_gunicorn.url.removeprefix("http://"))
    yield client, {"Authorization": f"Bearer {api_key}"}
    client.close()


def _input(binary: bool) -> httpclient.InferInput:
    tensor = httpclient.InferInput("input", list(ROWS.shape), "FP32")
    tensor.set_data_from_numpy(ROWS, binary_data=binary)
    return tensor


def test_health_and_metadata(triton):
    client, headers = triton
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("iris", headers=headers)
    assert client.is_model_ready("iris", model_version="1", headers=headers)
    metadata = client.get_model_metadata("iris", headers=headers)
    assert metadata["inputs"][0] == {"name": "input", "datatype": "FP32", "shape": [-1, 4]}
    assert client.get_server_metadata(headers=headers)["name"] == "modelmeter"


def test_infer_with_the_clients_defaults_binary_everywhere(triton):
    client, headers = triton
    result = client.infer("iris", [_input(binary=True)], headers=headers)
    assert result.as_numpy("label").tolist() == [b"setosa", b"virginica"]
    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == (2, 3) and probabilities.dtype == np.float32
    assert result.get_response()["model_version"] == "1"


def test_infer_in_plain_json(triton):
    client, headers = triton
    outputs = [httpclient.InferRequestedOutput("probabilities", binary_data=False)]
    result = client.infer(
        "iris", [_input(binary=False)], outputs=outputs, model_version="1", request_id="r-42", headers=headers
    )
    assert result.get_response()["id"] == "r-42"
    assert result.as_numpy("probabilities").argmax(axis=1).tolist() == [0, 2]
    assert result.as_numpy("label") is None


def test_it_matches_the_predict_face(triton, live_gunicorn, api_key):
    import json
    import urllib.request

    client, headers = triton
    via_triton = client.infer("iris", [_input(binary=True)], headers=headers).as_numpy("probabilities")
    request = urllib.request.Request(
        live_gunicorn.url + "/v1/models/iris:predict",
        data=json.dumps({"inputs": ROWS.tolist()}).encode(),
        headers={**headers, "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request) as response:
        via_predict = np.array(json.loads(response.read())["outputs"]["probabilities"], dtype=np.float32)
    np.testing.assert_allclose(via_triton, via_predict, rtol=1e-6)


def test_errors_reach_the_client_as_exceptions_with_the_servers_message(triton):
    client, headers = triton
    bad = httpclient.InferInput("nope", [2, 4], "FP32")
    bad.set_data_from_numpy(ROWS)
    with pytest.raises(InferenceServerException, match="Unknown input"):
        client.infer("iris", [bad], headers=headers)
    with pytest.raises(InferenceServerException, match="not found"):
        client.infer("missing-model", [_input(binary=True)], headers=headers)
    with pytest.raises(InferenceServerException, match="Bearer"):
        client.infer("iris", [_input(binary=True)])


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_requests_are_answered_like_plain_ones(triton, algorithm):
    client, headers = triton
    for binary in (True, False):
        result = client.infer(
            "iris", [_input(binary=binary)], headers=dict(headers), request_compression_algorithm=algorithm
        )
        assert result.as_numpy("label").tolist() == [b"setosa", b"virginica"]

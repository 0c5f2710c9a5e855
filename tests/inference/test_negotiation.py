"""The hot-path shortcut around DRF content negotiation answers exactly as DRF would."""

from typing import Any

import pytest

ROW = {"instances": [[5.1, 3.5, 1.4, 0.2]]}
INFER = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}]}


@pytest.mark.parametrize("accept", [None, "*/*", "application/json", "application/json; q=0.9, */*; q=0.1"])
def test_it_answers_json_for_json_friendly_accepts(api: Any, iris: Any, accept: str | None) -> None:
    extra = {"HTTP_ACCEPT": accept} if accept else {}
    response = api.post_json("/v1/models/iris:predict", ROW, **extra)
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/json"
    assert response.json()["model_version"] == "1"


def test_it_still_refuses_an_unacceptable_accept_with_406(api: Any, iris: Any) -> None:
    response = api.post_json("/v1/models/iris:predict", ROW, HTTP_ACCEPT="text/html")
    assert response.status_code == 406
    assert response.json()["error"]["code"]


def test_it_answers_v2_infer_with_and_without_accept(api: Any, iris: Any) -> None:
    for extra in ({}, {"HTTP_ACCEPT": "*/*"}):
        response = api.post_json("/v2/models/iris/infer", INFER, **extra)
        assert response.status_code == 200, response.content
        assert response.json()["model_version"] == "1"

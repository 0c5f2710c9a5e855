"""An organisation never sees another's private models, usage or keys: 404, not 403."""

import json

import pytest

from billing.models import UsageRecord

ROW = [5.1, 3.5, 1.4, 0.2]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/v1/models/secret-iris"),
        ("get", "/v1/models/secret-iris/versions"),
        ("get", "/v1/models/secret-iris/versions/1"),
        ("post", "/v1/models/secret-iris:predict"),
        ("post", "/v1/models/secret-iris/versions/1:predict"),
        ("post", "/v1/models/secret-iris/labels/production:predict"),
        ("get", "/v2/models/secret-iris"),
        ("get", "/v2/models/secret-iris/ready"),
        ("post", "/v2/models/secret-iris/infer"),
        ("post", "/v2/models/secret-iris/versions/1/infer"),
    ],
)
def test_another_organisations_private_model_is_404(api, private_model, method, path):
    if method == "get":
        response = api.get(path)
    else:
        body = (
            {"instances": [ROW]}
            if path.startswith("/v1")
            else {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": ROW}]}
        )
        response = api.post(path, data=json.dumps(body), content_type="application/json")
    assert response.status_code == 404, response.content


def test_the_owner_can_use_its_private_model(client_for, other_key, private_model):
    response = client_for(other_key).post_json("/v1/models/secret-iris:predict", {"instances": [ROW]})
    assert response.status_code == 200


def test_the_catalogue_lists_public_models_and_only_ones_own_private_models(
    api, client_for, other_key, iris, private_model
):
    assert [m["name"] for m in api.get("/v1/models").json()["results"]] == ["iris"]
    names = [m["name"] for m in client_for(other_key).get("/v1/models").json()["results"]]
    assert names == ["iris", "secret-iris"]


def test_usage_only_counts_the_callers_organisation(api, client_for, other_key, iris):
    api.post_json("/v1/models/iris:predict", {"instances": [ROW]})
    client_for(other_key).post_json("/v1/models/iris:predict", {"instances": [ROW, ROW]})
    mine = api.get("/v1/usage", {"group_by": "key"}).json()
    assert mine["totals"]["units"] == 1
    assert UsageRecord.objects.count() == 3  # two predictions and the usage read itself

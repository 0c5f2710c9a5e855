from billing.models import UsageRecord

IRIS_ROW = [5.1, 3.5, 1.4, 0.2]


def test_it_predicts_iris_rows_with_labels_and_probabilities(api, iris):
    response = api.post_json("/v1/models/iris:predict", {"instances": [IRIS_ROW, [6.7, 3.0, 5.2, 2.3]]})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["model_version"] == "1"
    assert [p["label"] for p in body["predictions"]] == ["setosa", "virginica"]
    assert abs(sum(body["predictions"][0]["probabilities"]) - 1.0) < 1e-5
    assert response["X-Model-Version"] == "1"


def test_it_records_one_ledger_row_per_call(api, iris):
    api.post_json("/v1/models/iris:predict", {"instances": [IRIS_ROW] * 3})
    row = UsageRecord.objects.get()
    assert (row.face, row.units, row.status_code, row.meter) == ("v1-predict", 3, 200, "online_predictions")
    assert row.model_version_id == iris.pk

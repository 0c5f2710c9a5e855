import json
import urllib.request

import pytest

pytestmark = pytest.mark.live


def test_it_serves_a_prediction_through_gunicorn(transactional_db, live_gunicorn, api_key, iris):
    request = urllib.request.Request(
        live_gunicorn.url + "/v1/models/iris:predict",
        data=json.dumps({"instances": [[5.1, 3.5, 1.4, 0.2]]}).encode(),
        headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request) as response:
        assert json.loads(response.read())["predictions"][0]["label"] == "setosa"

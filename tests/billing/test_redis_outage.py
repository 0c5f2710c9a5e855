import json
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from billing.models import UsageRecord
from tests import live
from tests.billing.conftest import IRIS_ROW, free_quota

pytestmark = pytest.mark.live


def wait_port(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("redis-server did not start")


def predict(url: str, key: str) -> tuple[int, dict[str, str], dict]:
    request = urllib.request.Request(
        url + "/v1/models/iris:predict", data=json.dumps({"instances": [IRIS_ROW]}).encode(), method="POST",
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read())


def test_it_keeps_serving_and_recording_when_redis_stops(transactional_db, tmp_path, api_key, iris):
    free_quota("online_predictions", 6)
    port = live.free_port()
    redis = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        with live.gunicorn(tmp_path, REDIS_URL=f"redis://127.0.0.1:{port}/0") as server:
            before = [predict(server.url, api_key) for _ in range(3)]
            assert [s for s, _, _ in before] == [200, 200, 200]
            assert all("RateLimit" in h for _, h, _ in before)
            redis.terminate()
            redis.wait(10)
            after = [predict(server.url, api_key) for _ in range(3)]
            assert [s for s, _, _ in after] == [200, 200, 200]
            assert all("RateLimit-Policy" in h and "RateLimit" not in h for _, h, _ in after)
            status, _, body = predict(server.url, api_key)
            assert (status, body["error"]["code"]) == (429, "quota_exceeded")  # checked in the database
    finally:
        live.stop(redis)
    assert UsageRecord.objects.count() == 7
    assert sum(UsageRecord.objects.values_list("units", flat=True)) == 6

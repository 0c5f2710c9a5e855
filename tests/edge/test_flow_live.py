"""The whole flow on real parts: API request -> Celery worker subprocess builds -> signed download."""

import hashlib
import io
import json
import time
import zipfile

import pytest

from billing.models import UsageRecord
from edge.models import Bundle
from tests.conftest import APIClient

from .conftest import register_digits

pytestmark = pytest.mark.live


def _wait_ready(api: APIClient, bundle_id: str, timeout: float = 180.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = api.get(f"/v1/bundles/{bundle_id}").json()
        if body["status"] in ("ready", "failed"):
            return body
        time.sleep(0.25)
    raise AssertionError(f"bundle {bundle_id} still {body['status']} after {timeout} s")


def test_it_builds_on_a_real_celery_worker_and_serves_a_verifiable_zip(
    transactional_db, celery_worker, api_key, public_key_pem
):
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    register_digits()
    api = APIClient(api_key)
    queued = api.post_json("/v1/models/digits/versions/1/bundles", {"variants": ["fp32", "int8"]})
    assert queued.status_code == 202
    body = _wait_ready(api, queued.json()["id"])
    assert body["status"] == "ready", body["reason"]
    assert body["report"]["int8"]["status"] == "published"
    assert Bundle.objects.get(public_id=body["id"]).attempts == 1
    # A second request is served from the cache: same bundle, nothing rebuilt.
    assert (
        api.post_json("/v1/models/digits/versions/1/bundles", {"variants": ["int8", "fp32"]}).json()["id"] == body["id"]
    )

    grant = api.get(f"/v1/bundles/{body['id']}/download").json()
    path = grant["url"].split("testserver", 1)[1]
    content = b"".join(APIClient().get(path).streaming_content)
    assert hashlib.sha256(content).hexdigest() == grant["sha256"]
    archive = zipfile.ZipFile(io.BytesIO(content))
    manifest_bytes = archive.read("manifest.json")
    load_pem_public_key(public_key_pem).verify(archive.read("manifest.sig"), manifest_bytes)
    assert json.loads(manifest_bytes)["bundle_id"] == body["id"]
    assert UsageRecord.objects.filter(face="bundle-download", units=1).count() == 1

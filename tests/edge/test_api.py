"""The bundles API: request (cached), read, list, signed download URLs, ranges, metering, isolation."""

import base64
import hashlib
import json
import time
from datetime import timedelta
from unittest import mock
from urllib.parse import parse_qs, urlsplit

import pytest

from billing.models import UsageRecord
from edge.models import Bundle
from edge.services import bundle_build
from tests.conftest import APIClient

from .conftest import build_now


def _ready(api, path="/v1/models/iris/versions/1/bundles", body=None):
    response = api.post_json(path, body or {})
    assert response.status_code == 202, response.content
    bundle_build(bundle_id=Bundle.objects.get(public_id=response.json()["id"]).pk)
    return response.json()["id"]


def _file_path(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def test_it_queues_a_bundle_once_per_version_and_variants(api, iris, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as queued:
        first = api.post_json("/v1/models/iris/versions/1/bundles", {"variants": ["ort", "fp32"]})
        again = api.post_json("/v1/models/iris/versions/production/bundles", {"variants": ["fp32", "ort"]})
        other = api.post_json("/v1/models/iris/versions/1/bundles", {})
    assert first.status_code == again.status_code == other.status_code == 202
    body = first.json()
    assert body["status"] == "queued"
    assert body["progress"] == 0
    assert body["variants"] == ["fp32", "ort"]
    assert first["Location"] == f"/v1/bundles/{body['id']}"
    assert again.json()["id"] == body["id"]
    assert other.json()["id"] != body["id"]
    assert other.json()["variants"] == ["fp32", "int8", "ort"]
    assert len(queued) == 2


def test_it_reports_status_progress_and_the_variant_report(api, iris):
    bundle_id = _ready(api)
    body = api.get(f"/v1/bundles/{bundle_id}").json()
    assert (body["status"], body["progress"], body["model"], body["version"]) == ("ready", 100, "iris", 1)
    assert body["report"]["int8"]["status"] == "skipped"
    assert body["report"]["fp32"]["files"] == ["models/fp32/model.onnx"]
    assert len(body["sha256"]) == 64
    assert body["size_bytes"] > 0
    assert body["key_id"].startswith("ed25519:")
    listed = api.get("/v1/models/iris/versions/1/bundles").json()
    assert [b["id"] for b in listed["results"]] == [bundle_id]


def test_it_reports_per_variant_why_a_bundle_failed(api, diabetes, django_capture_on_commit_callbacks):
    bundle_id = api.post_json("/v1/models/diabetes/versions/1/bundles", {"variants": ["int8"]}).json()["id"]
    bundle_build(bundle_id=Bundle.objects.get(public_id=bundle_id).pk)
    body = api.get(f"/v1/bundles/{bundle_id}").json()
    assert body["status"] == "failed"
    assert body["reason"].startswith("no variant could be published (int8: dynamic quantisation does not apply")
    assert body["report"]["int8"]["status"] == "skipped"
    assert body["report"]["int8"]["reason"].startswith("dynamic quantisation does not apply")
    assert body["report"]["fp32"] == body["report"]["ort"] == {"status": "not_requested", "reason": "not requested"}
    with django_capture_on_commit_callbacks():
        again = api.post_json("/v1/models/diabetes/versions/1/bundles", {"variants": ["int8"]}).json()
    assert (again["id"], again["status"], again["reason"], again["report"]) == (bundle_id, "queued", "", {})


def test_it_refuses_unknown_variants_and_unready_versions(api, iris):
    response = api.post_json("/v1/models/iris/versions/1/bundles", {"variants": ["fp64"]})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "variants"
    iris.status = "failed"
    iris.save()
    response = api.post_json("/v1/models/iris/versions/1/bundles", {})
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "version_not_ready"


def test_it_needs_the_bundles_scope(db, org, iris):
    from apiservice import services as org_services

    _, key = org_services.api_key_create(organisation=org, name="predict only", scopes=["predict"])
    response = APIClient(key).post_json("/v1/models/iris/versions/1/bundles", {})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "insufficient_scope"


def test_it_hides_private_bundles_from_other_organisations(api, other_key, private_model):
    owner = APIClient(other_key)
    bundle_id = _ready(owner, "/v1/models/secret-iris/versions/1/bundles")
    assert api.post_json("/v1/models/secret-iris/versions/1/bundles", {}).status_code == 404
    for path in (f"/v1/bundles/{bundle_id}", f"/v1/bundles/{bundle_id}/download"):
        response = api.get(path)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "bundle_not_found"
    assert owner.get(f"/v1/bundles/{bundle_id}").status_code == 200


def test_it_refuses_a_download_url_before_the_bundle_is_ready(api, iris, django_capture_on_commit_callbacks):
    bundle_id = api.post_json("/v1/models/iris/versions/1/bundles", {}).json()["id"]
    response = api.get(f"/v1/bundles/{bundle_id}/download")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "bundle_not_ready"


def test_it_serves_the_zip_behind_a_signed_url_with_length_and_strong_etag(api, iris):
    bundle_id = _ready(api)
    grant = api.get(f"/v1/bundles/{bundle_id}/download").json()
    response = APIClient().get(_file_path(grant["url"]))  # no key: the URL is the authorisation
    content = b"".join(response.streaming_content)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/zip"
    assert int(response["Content-Length"]) == len(content) == grant["size_bytes"]
    assert response["ETag"] == f'"{grant["sha256"]}"' == grant["etag"]
    assert hashlib.sha256(content).hexdigest() == grant["sha256"]
    assert response["Accept-Ranges"] == "bytes"


def test_it_serves_byte_ranges(api, iris):
    bundle_id = _ready(api)
    grant = api.get(f"/v1/bundles/{bundle_id}/download").json()
    path, size = _file_path(grant["url"]), grant["size_bytes"]
    whole = b"".join(APIClient().get(path).streaming_content)
    part = APIClient().get(path, HTTP_RANGE="bytes=10-19")
    assert part.status_code == 206
    assert part["Content-Range"] == f"bytes 10-19/{size}"
    assert part["Content-Length"] == "10"
    assert b"".join(part.streaming_content) == whole[10:20]
    tail = APIClient().get(path, HTTP_RANGE="bytes=-5")
    assert b"".join(tail.streaming_content) == whole[-5:]
    rest = APIClient().get(path, HTTP_RANGE=f"bytes={size - 3}-")
    assert b"".join(rest.streaming_content) == whole[-3:]
    stale = APIClient().get(path, HTTP_RANGE="bytes=0-1", HTTP_IF_RANGE='"not-the-etag"')
    assert stale.status_code == 200
    outside = APIClient().get(path, HTTP_RANGE=f"bytes={size}-")
    assert outside.status_code == 416
    assert outside["Content-Range"] == f"bytes */{size}"
    assert outside.json()["error"]["code"] == "range_not_satisfiable"
    assert APIClient().get(path, HTTP_IF_NONE_MATCH=grant["etag"]).status_code == 304


def test_it_answers_a_range_with_thousands_of_digits_as_http_not_a_server_error(api, iris):
    """int() refuses more than 4,300 digits: such a Range was a 500 instead of what a long number means."""
    bundle_id = _ready(api)
    grant = api.get(f"/v1/bundles/{bundle_id}/download").json()
    path, size, huge = _file_path(grant["url"]), grant["size_bytes"], "9" * 5000
    assert APIClient().get(path, HTTP_RANGE=f"bytes={huge}-").status_code == 416  # starts past the end
    whole = APIClient().get(path, HTTP_RANGE=f"bytes=0-{huge}")  # to the end
    assert (whole.status_code, whole["Content-Range"]) == (206, f"bytes 0-{size - 1}/{size}")
    suffix = APIClient().get(path, HTTP_RANGE=f"bytes=-{huge}")  # the last N bytes: all of them
    assert (suffix.status_code, suffix["Content-Range"]) == (206, f"bytes 0-{size - 1}/{size}")


@pytest.mark.parametrize("if_none_match", ["{etag}", "W/{etag}", "*", '"other", W/{etag}'])
def test_it_answers_not_modified_for_any_matching_if_none_match_and_bills_nothing(api, iris, if_none_match):
    bundle_id = _ready(api)
    grant = api.get(f"/v1/bundles/{bundle_id}/download").json()
    response = APIClient().get(_file_path(grant["url"]), HTTP_IF_NONE_MATCH=if_none_match.format(etag=grant["etag"]))
    assert response.status_code == 304
    assert response["ETag"] == grant["etag"]
    assert not UsageRecord.objects.filter(face="bundle-download").exists()


def test_it_serves_the_file_when_if_none_match_names_other_versions(api, iris):
    bundle_id = _ready(api)
    grant = api.get(f"/v1/bundles/{bundle_id}/download").json()
    response = APIClient().get(_file_path(grant["url"]), HTTP_IF_NONE_MATCH='W/"other", "another"')
    assert response.status_code == 200


def test_it_meters_each_download_url_once_however_many_requests_it_takes(api, iris):
    bundle_id = _ready(api)
    grant = api.get(f"/v1/bundles/{bundle_id}/download").json()
    path = _file_path(grant["url"])
    APIClient().head(path)  # a HEAD transfers nothing: not a download
    assert not UsageRecord.objects.filter(face="bundle-download").exists()
    for byte_range in ("bytes=0-99", "bytes=100-", None):
        response = APIClient().get(path, **({"HTTP_RANGE": byte_range} if byte_range else {}))
        assert response.status_code in (200, 206)
    rows = list(UsageRecord.objects.filter(face="bundle-download"))
    assert len(rows) == 1
    row = rows[0]
    assert (row.units, row.meter, row.organisation.slug, row.model_version_id) == (
        1,
        "bundle_downloads",
        "acme",
        iris.pk,
    )
    again = api.get(f"/v1/bundles/{bundle_id}/download").json()
    APIClient().get(_file_path(again["url"]))
    assert UsageRecord.objects.filter(face="bundle-download", units=1).count() == 2


def test_it_keeps_the_key_that_asked_out_of_the_download_url_and_still_bills_it(api, api_key, iris):
    from apiservice.models import APIKey

    bundle_id = _ready(api)
    grant = api.get(f"/v1/bundles/{bundle_id}/download").json()
    token = parse_qs(urlsplit(grant["url"]).query)["token"][0]
    readable = base64.urlsafe_b64decode(token.split(":")[0] + "==").decode()  # signed, not encrypted
    payload = json.loads(readable)
    assert set(payload) == {"b", "n"}
    assert payload["b"] == bundle_id
    key = APIKey.objects.get_from_key(api_key)
    assert key.pk not in readable
    assert key.prefix not in readable
    assert key.pk.rsplit("$", 1)[-1] not in readable  # the stored hash
    APIClient().get(_file_path(grant["url"]))
    row = UsageRecord.objects.get(face="bundle-download")
    assert (row.request_id, row.api_key_id, row.units) == (f"dl_{payload['n']}", key.pk, 1)


def test_it_refuses_a_signed_url_the_server_has_no_record_of(api, iris):
    from edge.models import DownloadURL

    bundle_id = _ready(api)
    path = _file_path(api.get(f"/v1/bundles/{bundle_id}/download").json()["url"])
    DownloadURL.objects.all().delete()  # e.g. issued before this release, or purged long after expiry
    response = APIClient().get(path)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "download_url_invalid"
    assert not UsageRecord.objects.filter(face="bundle-download").exists()


def test_it_refuses_an_expired_download_url(api, iris, settings):
    bundle_id = _ready(api)
    an_hour_ago = time.time() - 3600
    with mock.patch("django.core.signing.time.time", return_value=an_hour_ago):
        grant = api.get(f"/v1/bundles/{bundle_id}/download").json()
    response = APIClient().get(_file_path(grant["url"]))
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "download_url_expired"
    assert not UsageRecord.objects.filter(face="bundle-download").exists()


def test_it_refuses_a_download_url_past_the_expiry_recorded_when_it_was_issued(api, iris):
    from datetime import timedelta

    from django.utils import timezone

    from edge.models import DownloadURL

    bundle_id = _ready(api)
    path = _file_path(api.get(f"/v1/bundles/{bundle_id}/download").json()["url"])
    DownloadURL.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    response = APIClient().get(path)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "download_url_expired"


def test_it_refuses_a_download_url_presented_by_another_organisation(api, other_key, iris):
    bundle_id = _ready(api)
    grant = api.get(f"/v1/bundles/{bundle_id}/download").json()
    response = APIClient(other_key).get(_file_path(grant["url"]))
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "download_url_wrong_organisation"
    assert not UsageRecord.objects.filter(face="bundle-download").exists()


def test_it_refuses_a_tampered_or_misdirected_url(api, iris, diabetes):
    iris_id = _ready(api)
    diabetes_id = _ready(api, "/v1/models/diabetes/versions/1/bundles")
    path = _file_path(api.get(f"/v1/bundles/{iris_id}/download").json()["url"])
    misdirected = path.replace(iris_id, diabetes_id, 1)
    assert APIClient().get(misdirected).json()["error"]["code"] == "download_url_invalid"
    tampered = path[:-3] + ("aaa" if not path.endswith("aaa") else "bbb")
    response = APIClient().get(tampered)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "download_url_invalid"
    assert APIClient().get(f"/v1/bundles/{iris_id}/file").status_code == 403


def test_it_stops_serving_a_url_when_the_model_stops_being_visible(api, org, other_org, iris):
    bundle_id = _ready(api)
    path = _file_path(api.get(f"/v1/bundles/{bundle_id}/download").json()["url"])
    iris.model.organisation = other_org  # the catalogue model became another organisation's
    iris.model.save()
    assert APIClient().get(path).status_code == 404


@pytest.mark.parametrize("method", ["put", "delete"])
def test_it_answers_unsupported_methods_with_the_envelope(api, iris, method):
    response = getattr(api, method)("/v1/models/iris/versions/1/bundles")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_it_builds_a_bundle_the_test_helper_also_builds(iris):
    assert build_now(iris).status == "ready"


def test_it_names_the_bundles_model_version_in_the_x_model_version_header(api, iris):
    """The gateway adds X-Model-Version to every call recorded against a version; it was sent empty."""
    created = api.post_json("/v1/models/iris/versions/production/bundles", {})
    assert created["X-Model-Version"] == "1"
    bundle_build(bundle_id=Bundle.objects.get(public_id=created.json()["id"]).pk)
    for path in (f"/v1/bundles/{created.json()['id']}", f"/v1/bundles/{created.json()['id']}/download"):
        response = api.get(path)
        assert response.status_code == 200, response.content
        assert response["X-Model-Version"] == "1"


@pytest.mark.parametrize("end", ["revoked", "expired"])
def test_a_download_url_stops_working_once_the_key_that_asked_for_it_is_revoked_or_expired(api, api_key, iris, end):
    """Revoking a leaked key must also stop the URLs it handed out (they worked until they expired)."""
    from datetime import timedelta

    from django.utils import timezone

    from apiservice import services as org_services
    from apiservice.models import APIKey

    bundle_id = _ready(api)
    path = _file_path(api.get(f"/v1/bundles/{bundle_id}/download").json()["url"])
    key = APIKey.objects.get(prefix=api_key.partition(".")[0])
    if end == "revoked":
        org_services.api_key_revoke(api_key=key)
    else:
        APIKey.objects.filter(pk=key.pk).update(expiry_date=timezone.now() - timedelta(seconds=1))
    response = APIClient().get(path)
    assert response.status_code == 403, response.content
    assert response.json()["error"]["code"] == "download_url_key_revoked"
    assert not UsageRecord.objects.filter(face="bundle-download").exists()


@pytest.mark.django_db(transaction=True)  # on_commit runs inside the request, as in production
def test_it_accepts_a_bundle_request_while_the_broker_is_down(api, iris, monkeypatch):
    from kombu.exceptions import OperationalError

    def broker_down(*args):
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr("edge.tasks.bundle_build.delay", broker_down)
    response = api.post_json("/v1/models/iris/versions/1/bundles", {"variants": ["fp32"]})
    assert response.status_code == 202, response.content
    assert response.json()["status"] == "queued"


def test_it_queues_again_a_bundle_whose_message_was_lost(api, iris, settings, django_capture_on_commit_callbacks):
    path, body = "/v1/models/iris/versions/1/bundles", {"variants": ["fp32"]}
    api.post_json(path, body)  # its message never reaches a worker
    with django_capture_on_commit_callbacks() as soon:
        api.post_json(path, body)
    Bundle.objects.update(
        created_at=Bundle.objects.get().created_at - timedelta(seconds=settings.EDGE_BUILD_STALE_SECONDS + 1)
    )
    with django_capture_on_commit_callbacks() as later:
        response = api.post_json(path, body)
    assert (len(soon), len(later)) == (0, 1)
    assert response.json()["status"] == "queued"

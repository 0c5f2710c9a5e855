import json
import os
import subprocess
import sys

import pytest
from django.core.checks import run_checks

from apiservice.settings import BASE_DIR
from billing.models import UsageRecord


def test_an_unknown_v1_route_is_a_json_404(api):
    response = api.get("/v1/nothing-here")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("method", ["get", "post"])
@pytest.mark.parametrize("path", ["/v1/nothing-here", "/v1/usage/", "/v2/nothing-here"])
def test_an_unknown_api_route_is_a_json_404_with_debug_on_too(api, settings, path, method):
    settings.DEBUG = True  # `make run`: Django's own HTML 404 page would list every URL pattern
    api = type(api)(enforce_csrf_checks=True, **api.defaults)  # a POST there is no CSRF page either
    response = getattr(api, method)(path)
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    error = response.json()["error"]
    if path.startswith("/v2"):
        assert error == "No such endpoint."  # the OIP spec's shape
    else:
        assert error["code"] == "not_found"


@pytest.mark.parametrize("debug", [False, True])
@pytest.mark.parametrize("path", ["//v1/models", "//v1/models/iris:predict", "//v2/models/iris/infer"])
def test_an_api_path_with_a_doubled_slash_is_a_json_404_that_says_so(api, iris, settings, debug, path):
    """A base URL ending in '/' ($MM_URL/v1/...) used to get the portal's HTML 404 page."""
    settings.DEBUG = debug
    # A full URL: the test client would read "//v1/models" as host "v1" and path "/models".
    response = api.post(f"http://testserver{path}", data=b"{}", content_type="application/json")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    error = response.json()["error"]
    message = error if path.startswith("//v2") else error["message"]  # the OIP face keeps its spec's shape
    assert "'//'" in message


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/v1/files/%00"),
        ("delete", "/v1/files/file-%00"),
        ("get", "/v1/files/%00/content"),
        ("get", "/v1/batches/batch_%00"),
        ("post", "/v1/batches/%00/cancel"),
        ("get", "/v1/bundles/%00"),
        ("get", "/v1/bundles/%00/download"),
    ],
)
def test_an_id_holding_a_nul_byte_is_a_json_404_not_a_500(api, method, path):
    response = getattr(api, method)(path)  # PostgreSQL text cannot hold NUL: the lookup itself would fail
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("cursor=garbage", "cursor"),
        ("limit=abc", "limit"),
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=%C2%B2", "limit"),  # "²": str.isdigit() says yes, int() refused it (a 500)
    ],
)
def test_list_parameters_that_make_no_sense_are_400(api, iris, query, param):
    response = api.get(f"/v1/models?{query}")
    assert response.status_code == 400, response.content
    assert response.json()["error"]["param"] == param


@pytest.mark.parametrize("position", ["abc", "1e999", "nan", "", "\u00b2"])
def test_a_well_formed_cursor_with_a_position_that_is_not_a_number_is_400(api, iris, position):
    import base64

    cursor = base64.b64encode(f"p={position}".encode()).decode()
    response = api.get(f"/v1/models/iris/versions?cursor={cursor}")
    assert response.status_code == 400, response.content
    assert response.json()["error"]["param"] == "cursor"


def test_lists_follow_their_cursor_with_a_valid_limit(api, iris, diabetes):
    first = api.get("/v1/models?limit=1").json()
    assert len(first["results"]) == 1 and first["next"]
    second = api.get(first["next"].split("testserver", 1)[-1]).json()
    assert [m["name"] for m in first["results"] + second["results"]] == ["diabetes", "iris"]


def test_logs_from_django_request_carry_the_request_id(api, caplog):
    import logging

    from apiservice.logging import RequestIdFilter

    with caplog.at_level(logging.WARNING, logger="django.request"):
        response = api.get("/v1/nothing-here")
    records = [r for r in caplog.records if r.name == "django.request"]
    assert records, "django.request logs a 404"
    RequestIdFilter().filter(records[-1])
    assert records[-1].request_id == response["X-Request-Id"]


def test_a_wrong_method_is_a_json_405(api, iris):
    response = api.get("/v1/models/iris:predict")
    assert response.status_code == 405
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_a_body_over_the_cap_is_413_and_still_recorded(api, iris, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = api.post_json("/v1/models/iris:predict", {"instances": [[1.0, 2.0, 3.0, 4.0]] * 200})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    row = UsageRecord.objects.get()
    assert (row.status_code, row.face) == (413, "v1-predict")  # the operation, though its view never ran


def test_every_response_carries_a_request_id_and_accepts_the_clients(api, iris):
    generated = api.get("/v1/models")
    assert generated["X-Request-Id"].startswith("req_")
    mine = api.get("/v1/models", HTTP_X_REQUEST_ID="client-123")
    assert mine["X-Request-Id"] == "client-123"
    again = api.get("/v1/models", HTTP_X_REQUEST_ID="client-123")
    assert again.status_code == 200  # a reused client id never collides in the ledger
    rows = UsageRecord.objects.filter(client_request_id="client-123")
    assert rows.count() == 2 and len({r.request_id for r in rows}) == 2


def test_errors_carry_the_request_id_of_the_response(api, iris):
    response = api.post_json("/v1/models/iris:predict", {"instances": "nope"})
    assert response.json()["error"]["request_id"] == response["X-Request-Id"]


def test_metrics_are_not_public(client, settings):
    settings.METRICS_TOKEN = ""
    assert client.get("/metrics").status_code == 404
    settings.METRICS_TOKEN = "s3cret-token"
    assert client.get("/metrics").status_code == 401
    response = client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-token")
    assert response.status_code == 200
    assert b"modelmeter_api_calls_total" in response.content


@pytest.mark.parametrize(
    ("setting", "value", "check_id"),
    [
        ("API_KEY_CACHE_SECONDS", 5.0, "apiservice.E001"),
        ("INFERENCE_NAN_POLICY", "maybe", "apiservice.E002"),
        ("FILE_UPLOAD_CHUNK_BYTES", 0, "apiservice.E003"),
        ("FILE_UPLOAD_CHUNK_BYTES", 1024 * 1024 + 2, "apiservice.E003"),
        ("IDEMPOTENCY_CLAIM_SECONDS", 60, "apiservice.E004"),
        ("ORT_CONCURRENT_RUNS", -1, "apiservice.E005"),
    ],
)
def test_system_checks_catch_bad_configuration(settings, setting, value, check_id):
    setattr(settings, setting, value)
    assert check_id in [message.id for message in run_checks()]


def test_a_body_that_does_not_parse_names_what_it_is(api):
    """A broken multipart upload is no JSON error: `invalid_body`; bad JSON stays `invalid_json`."""
    multipart = api.post("/v1/files", data=b"abc", content_type="multipart/form-data")
    assert multipart.status_code == 400
    assert multipart.json()["error"]["code"] == "invalid_body"
    json_body = api.post("/v1/batches", data=b"{nope", content_type="application/json")
    assert json_body.status_code == 400
    assert json_body.json()["error"]["code"] == "invalid_json"


@pytest.mark.parametrize("debug", [True, False])
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/v1/models"),
        ("post", "/v1/models/iris:predict"),
        ("post", "/v2/models/iris/infer"),
        ("get", "/v2/health/ready"),
        ("get", "/v1/nothing-here"),
    ],
)
def test_a_host_this_server_does_not_serve_is_a_json_400(api, iris, settings, debug, method, path):
    """Not Django's HTML page (with DEBUG on, `make run`: a traceback and the settings)."""
    settings.DEBUG = debug
    response = getattr(api, method)(path, data={}, content_type="application/json", HTTP_HOST="evil.example")
    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    error = response.json()["error"]
    if path.startswith("/v2"):
        assert error == "The Host header names no host this server answers for."
    else:
        assert (error["code"], error["param"]) == ("invalid_host", None)
    assert not UsageRecord.objects.exists()


def test_the_400_handler_answers_api_paths_with_the_envelope(rf):
    import json

    from apiservice.errors import bad_request_view

    response = bad_request_view(rf.get("/v1/models"), Exception("bad"))
    assert (response.status_code, response["Content-Type"]) == (400, "application/json")
    assert json.loads(response.content)["error"]["code"] == "bad_request"
    assert bad_request_view(rf.get("/portal/"), Exception("bad"))["Content-Type"].startswith("text/html")


def test_a_multipart_body_with_too_many_fields_is_400_not_500(api, settings):
    """Django refuses it with a SuspiciousOperation (TooManyFieldsSent): the client's fault, not ours."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 10
    fields = {f"field{i}": "x" for i in range(20)}
    upload = SimpleUploadedFile("rows.jsonl", b'{"custom_id": "a", "instances": [[1, 2]]}\n')
    response = api.post("/v1/files", {"file": upload, "purpose": "batch", **fields})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "bad_request"


def test_logs_are_json_lines_with_debug_on_too(tmp_path):
    """`make run` (DEBUG on): Django's own console handler printed a plain-text copy of each record."""
    script = "import django, logging; django.setup(); logging.getLogger('django.request').warning('Not Found: /x')"
    environment = {"PATH": os.environ["PATH"], "DJANGO_SETTINGS_MODULE": "apiservice.settings", "DJANGO_DEBUG": "true"}
    environment["MODELMETER_VAR_DIR"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=BASE_DIR, env=environment, capture_output=True, text=True, timeout=60
    )
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert json.loads(lines[0])["message"] == "Not Found: /x"


def test_a_list_asked_for_in_a_format_it_does_not_offer_is_a_406(api, iris):
    response = api.get("/v1/models?format=xml")
    assert response.status_code == 406
    assert response.json()["error"]["code"] == "not_acceptable"

"""The WSGI application serves the gateway's fast routes outside Django's request cycle, with the same answers."""

import io
import json
import time
from typing import Any

import pytest
from django.core.handlers.wsgi import WSGIHandler
from django.db import connection

from apiservice.handler import APIHandler, fast_route_middleware
from apiservice.wsgi_input import PlainBody
from billing.models import UsageRecord

pytestmark = pytest.mark.django_db(transaction=True)  # the ledger row commits on its own, as in production

IRIS_ROW = [5.1, 3.5, 1.4, 0.2]
# Headers whose value is the same on every call (the request id and rate-limit counts are not).
STABLE_HEADERS = (
    "Content-Type",
    "Content-Length",  # so that gunicorn need not frame the answer in chunks
    "X-Model-Version",
    "X-Content-Type-Options",
    "Referrer-Policy",
    "Cross-Origin-Opener-Policy",
    "Strict-Transport-Security",
    "WWW-Authenticate",
    "Location",
)


def call(app: Any, path: str, *, body: bytes = b"", key: str | None = None, https: bool = False, **extra: str) -> Any:
    environ = {
        "REQUEST_METHOD": extra.pop("method", "POST"),
        "PATH_INFO": path,
        "SCRIPT_NAME": "",
        "QUERY_STRING": extra.pop("query", ""),
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "443" if https else "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "testserver",
        "wsgi.url_scheme": "https" if https else "http",
        "wsgi.input": io.BytesIO(body),
        "CONTENT_LENGTH": str(len(body)),
        "CONTENT_TYPE": "application/json",
        **extra,
    }
    if key is not None:
        environ["HTTP_AUTHORIZATION"] = f"Bearer {key}"
    started: list[Any] = []
    chunks = app(environ, lambda status, headers, exc_info=None: started.append((status, headers)))
    content = b"".join(chunks)
    getattr(chunks, "close", lambda: None)()
    status, headers = started[0]
    return int(status.split()[0]), dict(headers), content


def comparable(answer: Any) -> Any:
    status, headers, content = answer
    body = json.loads(content) if content else None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        body["error"].pop("request_id", None)
    return status, {name: headers.get(name) for name in STABLE_HEADERS}, body


def predict(rows: list[Any]) -> bytes:
    return json.dumps({"instances": rows}).encode()


@pytest.fixture
def apps() -> tuple[Any, Any]:
    """This project's WSGI application and Django's stock one, both behind the same body handling."""
    return PlainBody(APIHandler()), PlainBody(WSGIHandler())


@pytest.mark.parametrize(
    ("case", "path", "body", "keyed"),
    [
        ("served", "/v1/models/iris:predict", predict([IRIS_ROW]), True),
        ("bad input", "/v1/models/iris:predict", predict([[1.0, 2.0]]), True),
        ("no key", "/v1/models/iris:predict", predict([IRIS_ROW]), False),
        ("unknown model", "/v1/models/nope:predict", predict([IRIS_ROW]), True),
        ("not JSON", "/v2/models/iris/infer", b"{", True),
        (
            "v2 served",
            "/v2/models/iris/infer",
            b'{"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]}',
            True,
        ),
    ],
)
def test_a_fast_route_answers_as_through_djangos_own_handler_and_is_recorded_once_each_time(
    apps, api_key, iris, case, path, body, keyed
):
    ours, stock = apps
    key = api_key if keyed else None
    fast, slow = call(ours, path, body=body, key=key), call(stock, path, body=body, key=key)
    assert comparable(fast) == comparable(slow), case
    assert fast[1]["X-Request-Id"].startswith("req_")
    assert UsageRecord.objects.count() == (2 if keyed else 0)


@pytest.mark.parametrize(
    ("path", "body", "keyed"),
    [
        ("/v1/models/iris:predict", predict([IRIS_ROW]), True),
        ("/v1/models/iris:predict", predict([[1.0, 2.0]]), True),
        ("/v1/models/iris:predict", predict([IRIS_ROW]), False),
        ("/v2/models/iris/infer", b"{", True),
        ("/v1/models", b"", True),
    ],
    ids=["served", "bad input", "no key", "v2 not JSON", "Django's path"],
)
def test_every_api_answer_says_its_length_so_gunicorn_need_not_send_it_in_chunks(
    apps, api_key, iris, path, body, keyed
):
    ours, _ = apps
    method = "POST" if body else "GET"
    status, headers, content = call(ours, path, body=body, key=api_key if keyed else None, method=method)
    assert headers["Content-Length"] == str(len(content)), status


def test_a_head_request_gets_the_headers_of_its_get_and_no_body(apps, api_key, iris):
    ours, _ = apps
    status, get_headers, get_content = call(ours, "/v1/models/iris", key=api_key, method="GET")
    head = call(ours, "/v1/models/iris", key=api_key, method="HEAD")
    assert (status, head[0]) == (200, 200)
    assert head[2] == b""  # gunicorn would drop it, with a warning per request
    assert head[1]["Content-Length"] == get_headers["Content-Length"] == str(len(get_content))
    assert head[1]["Content-Type"] == get_headers["Content-Type"]
    live = call(ours, "/v2/health/live", method="HEAD")
    assert (live[0], live[2], live[1]["Content-Length"]) == (200, b"", str(len(b'{"live":true}')))


def test_it_redirects_plain_http_to_https_and_sends_hsts_as_the_security_middleware_does(api_key, iris, settings):
    settings.SECURE_SSL_REDIRECT, settings.SECURE_HSTS_SECONDS = True, 3600
    ours, stock = PlainBody(APIHandler()), PlainBody(WSGIHandler())  # the middleware read these settings once
    body = predict([IRIS_ROW])
    redirected = call(ours, "/v1/models/iris:predict", body=body, key=api_key)
    assert comparable(redirected)[:2] == comparable(call(stock, "/v1/models/iris:predict", body=body, key=api_key))[:2]
    assert redirected[0] == 301
    assert redirected[1]["Location"] == "https://testserver/v1/models/iris:predict"
    served = call(ours, "/v1/models/iris:predict", body=body, key=api_key, https=True)
    assert served[0] == 200
    assert served[1]["Strict-Transport-Security"].startswith("max-age=3600")


def test_what_no_fast_route_serves_takes_djangos_path(apps, api_key, iris):
    ours, _ = apps
    for path, extra in [
        ("/v1/models/iris:predict", {"query": "format=json"}),  # DRF's content negotiation
        ("/v1/models", {"method": "GET"}),
        ("/portal/login/", {"method": "GET"}),
    ]:
        status, headers, _ = call(ours, path, body=predict([IRIS_ROW]), key=api_key, **extra)
        assert status == 200, path
    assert "csrftoken" in headers.get("Set-Cookie", "")  # the middleware after the gateway ran


@pytest.mark.parametrize("path", ["/v1/batches/\xf3\xa4\xb0\x93/cancel", "/v1/models/\xf3\xa4\xb0\x93:predict"])
def test_a_path_of_utf_8_beyond_latin_1_is_decoded_once_whichever_path_serves_it(apps, api_key, iris, path):
    """The environ holds the path as latin-1 text of its bytes; Django's request rewrites it decoded,
    so deciding on a request and then handing the environ on decoded it twice (a 500)."""
    ours, stock = apps
    answer = call(ours, path, body=predict([IRIS_ROW]), key=api_key)
    assert answer[0] == 404
    assert comparable(answer) == comparable(call(stock, path, body=predict([IRIS_ROW]), key=api_key))


def test_an_error_outside_the_view_is_the_json_500_envelope_and_the_request_id_is_kept(apps, api_key, iris):
    ours, _ = apps
    with connection.cursor() as cursor:  # the ledger cannot be written
        cursor.execute('ALTER TABLE "billing_usagerecord" RENAME TO "usagerecord_away"')
    try:
        status, headers, content = call(ours, "/v1/models/iris:predict", body=predict([IRIS_ROW]), key=api_key)
    finally:
        with connection.cursor() as cursor:
            cursor.execute('ALTER TABLE "usagerecord_away" RENAME TO "billing_usagerecord"')
    assert status == 500
    assert headers["Content-Type"] == "application/json"
    error = json.loads(content)["error"]
    assert error["request_id"] == headers["X-Request-Id"]


def test_a_database_connection_past_its_age_is_closed_after_a_fast_call_as_after_any_request(apps, api_key, iris):
    ours, _ = apps
    assert call(ours, "/v1/models/iris:predict", body=predict([IRIS_ROW]), key=api_key)[0] == 200
    assert connection.connection is not None
    connection.close_at = time.monotonic() - 1  # CONN_MAX_AGE has run out
    assert call(ours, "/v1/models/iris:predict", body=predict([IRIS_ROW]), key=api_key)[0] == 200
    assert connection.connection is None


class StampMiddleware:
    """A middleware an operator might add before the gateway (CORS, say)."""

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response

    def __call__(self, request: Any) -> Any:
        response = self.get_response(request)
        response["X-Stamp"] = "yes"
        response.set_cookie("stamp", "1")
        return response


def test_the_middleware_listed_before_the_gateway_run_on_fast_routes_too(api_key, iris, settings):
    assert fast_route_middleware() == [
        "apiservice.middleware.RequestIdMiddleware",
        "django.middleware.security.SecurityMiddleware",
    ]  # WhiteNoise, also before the gateway, serves static files only
    settings.MIDDLEWARE = ["tests.apiservice.test_handler.StampMiddleware", *settings.MIDDLEWARE]
    status, headers, _ = call(PlainBody(APIHandler()), "/v1/models/iris:predict", body=predict([IRIS_ROW]), key=api_key)
    assert (status, headers.get("X-Stamp")) == (200, "yes")
    assert headers["Set-Cookie"].strip().startswith("stamp=1;")  # as Django writes it: c.output(header="")

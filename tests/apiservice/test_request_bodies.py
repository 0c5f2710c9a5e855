"""Chunked and compressed request bodies reach the API as the bytes the client meant, under the same cap."""

import gzip
import http.client
import io
import json
import socket
import zlib
from urllib.parse import urlsplit

import pytest

from apiservice.wsgi_input import BODY_ERROR, BODY_OVER_LIMIT, plain_body
from billing.models import UsageRecord

pytestmark = pytest.mark.live

BODY = json.dumps({"instances": [[5.1, 3.5, 1.4, 0.2]]}).encode()


def _post(server, key, body, headers, *, chunks=None):
    """POST with http.client: `chunks` sends the body with Transfer-Encoding: chunked."""
    url = urlsplit(server.url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    all_headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json", **headers}
    if chunks is not None:
        connection.request(
            "POST", "/v1/models/iris:predict", body=iter(chunks), headers=all_headers, encode_chunked=True
        )
    else:
        connection.request("POST", "/v1/models/iris:predict", body=body, headers=all_headers)
    response = connection.getresponse()
    answer = response.status, json.loads(response.read())
    connection.close()
    return answer


@pytest.fixture
def server(transactional_db, live_gunicorn, iris):
    return live_gunicorn


def test_a_chunked_body_is_read_whole(server, api_key):
    status, body = _post(server, api_key, None, {}, chunks=[BODY[:10], BODY[10:25], BODY[25:]])
    assert status == 200, body
    assert body["predictions"][0]["label"] == "setosa"


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [("gzip", gzip.compress), ("deflate", zlib.compress)],
)
def test_a_compressed_body_is_decompressed(server, api_key, encoding, compress):
    status, body = _post(server, api_key, compress(BODY), {"Content-Encoding": encoding})
    assert status == 200, body
    assert body["predictions"][0]["label"] == "setosa"


def test_a_compressed_and_chunked_body_is_read_and_decompressed(server, api_key):
    packed = gzip.compress(BODY)
    status, body = _post(server, api_key, None, {"Content-Encoding": "gzip"}, chunks=[packed[:7], packed[7:]])
    assert status == 200, body


def test_a_small_body_that_inflates_past_the_cap_is_413(server, api_key):
    bomb = gzip.compress(b" " * (9 * 1024 * 1024))  # ~9 KB on the wire, over the 8 MiB cap inflated
    status, body = _post(server, api_key, bomb, {"Content-Encoding": "gzip"})
    assert status == 413
    assert body["error"]["code"] == "payload_too_large"
    assert "8388608-byte limit" in body["error"]["message"]


def test_a_chunked_body_over_the_cap_is_413(server, api_key):
    status, body = _post(server, api_key, None, {}, chunks=[b" " * (1024 * 1024)] * 9)
    assert status == 413
    assert body["error"]["code"] == "payload_too_large"


def test_an_unknown_encoding_is_415_and_a_corrupt_one_400_both_recorded(server, api_key):
    status, body = _post(server, api_key, BODY, {"Content-Encoding": "br"})
    assert status == 415
    assert body["error"]["code"] == "unsupported_content_encoding"
    status, body = _post(server, api_key, b"not gzip at all", {"Content-Encoding": "gzip"})
    assert status == 400
    assert body["error"]["code"] == "invalid_body"
    assert sorted(UsageRecord.objects.values_list("status_code", flat=True)) == [400, 415]


def _post_raw(server, key, path, body, *, framing="Transfer-Encoding: chunked", close_early=False):
    """POST `body` as the request's raw bytes after its head (`framing`: the header that says where the
    body ends): for bodies http.client will not send. `close_early`: shut our side once it is sent."""
    url = urlsplit(server.url)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {url.hostname}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\n{framing}\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
        sock.sendall(head.encode() + body)
        if close_early:
            sock.shutdown(socket.SHUT_WR)
        answer = sock.makefile("rb").read()
    head_part, _, payload = answer.partition(b"\r\n\r\n")
    return int(head_part.split(b" ")[1]), head_part, payload


# Each face's error shape: our envelope on :predict, the spec's {"error": "<message>"} on /v2.
FACES = pytest.mark.parametrize(
    ("path", "error"),
    [
        ("/v1/models/iris:predict", lambda body: body["error"]["code"] == "invalid_body"),
        ("/v2/models/iris/infer", lambda body: isinstance(body["error"], str)),
    ],
    ids=["predict", "infer"],
)


@FACES
def test_a_malformed_chunked_body_is_a_400_of_the_faces_shape_and_is_recorded(server, api_key, path, error):
    """gunicorn's reader refuses the chunk size `zz`; that used to reach the client as gunicorn's own
    answer: the /v1 envelope on /v2 too, and no ledger row for an authenticated call."""
    status, head, payload = _post_raw(server, api_key, path, b"zz\r\nabc\r\n0\r\n\r\n")
    if b"chunked" in head.lower():
        payload = payload.split(b"\r\n", 1)[1].rsplit(b"\r\n0\r\n", 1)[0]
    assert status == 400
    assert error(json.loads(payload))
    assert list(UsageRecord.objects.values_list("status_code", "units")) == [(400, 0)]


def test_a_server_that_cannot_tell_where_a_chunked_body_ends_gets_411(settings):
    environ = {"HTTP_TRANSFER_ENCODING": "chunked", "wsgi.input": io.BytesIO(b"{}")}
    plain_body(environ)
    assert environ[BODY_ERROR][0] == 411


def test_a_plain_body_is_left_alone():
    stream = io.BytesIO(BODY)
    environ = {"CONTENT_LENGTH": str(len(BODY)), "wsgi.input": stream, "HTTP_CONTENT_ENCODING": "identity"}
    plain_body(environ)
    assert environ["wsgi.input"] is stream and BODY_OVER_LIMIT not in environ and BODY_ERROR not in environ


def _plain(body: bytes, encoding: str) -> dict:
    environ = {"CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body), "HTTP_CONTENT_ENCODING": encoding}
    plain_body(environ)
    return environ


def test_a_gzip_body_of_several_members_is_read_whole():
    """RFC 1952 allows members one after another (`cat a.gz b.gz`); only the first used to be read."""
    environ = _plain(gzip.compress(BODY[:10]) + gzip.compress(BODY[10:]), "gzip")
    assert BODY_ERROR not in environ
    assert environ["wsgi.input"].read() == BODY


@pytest.mark.parametrize(
    ("encoding", "packed"),
    [("gzip", gzip.compress(BODY) + b"junk"), ("deflate", zlib.compress(BODY) + zlib.compress(b" "))],
    ids=["gzip", "deflate"],
)
def test_bytes_after_the_end_of_a_compressed_body_are_refused_not_dropped(encoding, packed):
    assert _plain(packed, encoding)[BODY_ERROR] == (400, "invalid_body", f"The body is not valid {encoding} data.")


def test_a_gzip_body_of_too_many_members_is_refused():
    """Each member costs a copy of the rest of the body: 8 MiB of empty members took minutes."""
    members = gzip.compress(BODY) + gzip.compress(b"", mtime=0) * 16
    assert _plain(members, "gzip")[BODY_ERROR][:2] == (400, "invalid_body")


@FACES
def test_a_body_cut_short_of_its_content_length_is_a_400_not_a_billed_prediction(server, api_key, path, error):
    """The client announces 1,000 bytes, sends a whole JSON document of fewer and closes its side: the
    request is broken, so the call is refused and recorded without units, not predicted and billed."""
    body = (
        BODY
        if path.startswith("/v1")
        else json.dumps(
            {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]}
        ).encode()
    )
    status, _, payload = _post_raw(server, api_key, path, body, framing="Content-Length: 1000", close_early=True)
    assert status == 400
    assert error(json.loads(payload))
    assert list(UsageRecord.objects.values_list("status_code", "units")) == [(400, 0)]

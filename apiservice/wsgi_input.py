"""Request bodies Django cannot read by itself, made plain before it sees them (API paths only).

Django reads `CONTENT_LENGTH` bytes of `wsgi.input`, so a body sent with `Transfer-Encoding: chunked`
(no length; gunicorn de-chunks it and says so with `wsgi.input_terminated`) would read as empty, and a
`Content-Encoding: gzip` / `deflate` body (tritonclient's `request_compression_algorithm`) as bytes no
parser understands. This WSGI wrapper reads such a body up to the request-size cap (one byte more, so
that the gateway can answer 413), decompresses it with the same cap (a small bomb cannot inflate past
it), and hands Django a plain body with its length. What it cannot decode it leaves for the gateway to
refuse in the error envelope (`BODY_ERROR`), with the request id and a ledger row like any other call.
"""

import io
import zlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from django.conf import settings

BODY_ERROR = "modelmeter.body_error"  # (status, code, message) for the gateway to answer
BODY_OVER_LIMIT = "modelmeter.body_over_limit"  # True: the body is longer than the cap (413)
_API_PREFIXES = ("/v1", "/v2")
_GZIP_WBITS = zlib.MAX_WBITS | 16
_GZIP_MAX_MEMBERS = 16
_ENCODINGS = {"gzip": _GZIP_WBITS, "x-gzip": _GZIP_WBITS, "deflate": zlib.MAX_WBITS}
_READ_CHUNK = 64 * 1024

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


MULTIPART_OVERHEAD_BYTES = 64 * 1024  # boundaries, part headers, a long file name, the form's other fields
# Staff's model uploads (`/v1/staff/models/<name>/versions`) are held to MODEL_MAX_BYTES, not to the larger
# FILE_MAX_BYTES of batch input files: the model is read into memory before its size is checked.
_MODEL_UPLOAD_PREFIX = "/v1/staff/models/"


def max_body_bytes(meta: Mapping[str, Any]) -> int:
    """The request-body cap (413 above it): `MAX_REQUEST_BYTES`; for an upload, `FILE_MAX_BYTES`
    (`MODEL_MAX_BYTES` for a staff model upload) plus its multipart envelope (the file itself is held to
    that cap where it is stored)."""
    if str(meta.get("CONTENT_TYPE", "")).startswith("multipart/form-data"):
        setting = (
            "MODEL_MAX_BYTES" if str(meta.get("PATH_INFO", "")).startswith(_MODEL_UPLOAD_PREFIX) else "FILE_MAX_BYTES"
        )
        files = getattr(settings, setting, None)
        if files:
            return int(files) + MULTIPART_OVERHEAD_BYTES
    return int(settings.DATA_UPLOAD_MAX_MEMORY_SIZE)


def _read_at_most(stream: Any, limit: int) -> bytes:
    """Up to `limit` bytes of a stream that ends by itself."""
    parts, size = [], 0
    while size < limit:
        part = stream.read(min(_READ_CHUNK, limit - size))
        if not part:
            break
        parts.append(part)
        size += len(part)
    return b"".join(parts)


def _inflate(data: bytes, *, wbits: int, limit: int) -> bytes:
    """Decompressed `data`, at most `limit` bytes; zlib.error for a corrupt or truncated stream, or for
    bytes after its end. A gzip body may hold several members one after another (RFC 1952), up to
    `_GZIP_MAX_MEMBERS`: each member copies the rest of the body (`unused_data`), so a body of
    thousands of empty members would cost minutes of CPU."""
    parts, size = [], 0
    for _ in range(_GZIP_MAX_MEMBERS):
        inflater = zlib.decompressobj(wbits)
        part = inflater.decompress(data, limit - size)
        parts.append(part)
        size += len(part)
        if size >= limit:
            return b"".join(parts)
        if not inflater.eof:
            raise zlib.error("the compressed body is truncated")
        data = inflater.unused_data
        if not data:
            return b"".join(parts)
        if wbits != _GZIP_WBITS:
            raise zlib.error("bytes after the end of the compressed body")
    raise zlib.error("too many gzip members")


def plain_body(environ: dict[str, Any]) -> None:
    """Rewrite `environ` in place so that `wsgi.input` holds the plain body and `CONTENT_LENGTH` its size."""
    encoding = environ.get("HTTP_CONTENT_ENCODING", "").strip().lower()
    chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower() and not environ.get("CONTENT_LENGTH")
    if not chunked and encoding in ("", "identity"):
        return
    limit = max_body_bytes(environ)
    if chunked:
        if not environ.get("wsgi.input_terminated"):  # a server that cannot tell where the body ends
            environ[BODY_ERROR] = (411, "length_required", "Send a Content-Length; chunked bodies cannot be read here.")
            return
        try:
            body = _read_at_most(environ["wsgi.input"], limit + 1)
        except Exception:  # the server's own reader refused the chunks, or the client left
            # Raised out of here, the server (gunicorn) would answer by itself: no ledger row, and the /v1
            # envelope on a /v2 path. The server still knows its reader failed and closes the connection.
            environ[BODY_ERROR] = (400, "invalid_body", "The chunked body is malformed or ended before its last chunk.")
            return
    else:
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return  # the gateway treats an unreadable length as none
        if length > limit:
            return  # the gateway answers 413 from the length alone
        body = _read_at_most(environ["wsgi.input"], length)
    if encoding not in ("", "identity"):
        wbits = _ENCODINGS.get(encoding)
        if wbits is None:
            environ[BODY_ERROR] = (
                415,
                "unsupported_content_encoding",
                f"Content-Encoding '{encoding}' is not supported; send identity, gzip or deflate.",
            )
            return
        try:
            body = _inflate(body, wbits=wbits, limit=limit + 1)
        except zlib.error:
            environ[BODY_ERROR] = (400, "invalid_body", f"The body is not valid {encoding} data.")
            return
        del environ["HTTP_CONTENT_ENCODING"]
    if len(body) > limit:
        environ[BODY_OVER_LIMIT] = True
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    environ.pop("HTTP_TRANSFER_ENCODING", None)


class PlainBody:
    """WSGI middleware around Django's application: see the module docstring."""

    def __init__(self, app: WSGIApp) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if ("HTTP_CONTENT_ENCODING" in environ or "HTTP_TRANSFER_ENCODING" in environ) and environ.get(
            "PATH_INFO", ""
        ).startswith(_API_PREFIXES):
            plain_body(environ)
        return self.app(environ, start_response)

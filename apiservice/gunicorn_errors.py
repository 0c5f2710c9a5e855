"""gunicorn's own refusals, in the API's error envelope instead of an HTML page.

gunicorn answers a request it cannot parse itself, before Django sees it: a request line over
`limit_request_line` (414), too many or too large header fields (431), a malformed request line,
header or chunked body (400). Its answer is an HTML page. `install()` (called by the worker hook in
`gunicorn.conf.py`) makes it the envelope every other error carries, with a request id. The path is
what failed to parse, so the answer is always the `/v1` envelope.
"""

from typing import Any

from gunicorn import util

CODES = {
    400: "bad_request",
    403: "forbidden",
    414: "uri_too_long",
    417: "expectation_failed",
    431: "header_fields_too_large",
    501: "not_implemented",
}
MESSAGES = {
    414: "The request line (method, path and query string) is longer than this server accepts.",
    431: "The request's header fields are too many or too large.",
}


def write_json_error(sock: Any, status_int: int, reason: str, mesg: str) -> None:
    """Drop-in for `gunicorn.util.write_error(sock, status_int, reason, mesg)`."""
    from .errors import envelope
    from .middleware import new_request_id
    from .renderers import dumps

    request_id = new_request_id()
    if status_int >= 500 and status_int != 501:
        code, message = "server_error", "The server could not handle this request."
    else:
        code = CODES.get(status_int, "bad_request")
        message = MESSAGES.get(status_int) or f"The request is not valid HTTP: {mesg}"[:300]
    body = dumps(envelope(status=status_int, code=code, message=message, param=None, request_id=request_id))
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nX-Request-Id: {request_id}\r\n\r\n"
    )
    util.write_nonblock(sock, head.encode("latin-1") + body)  # gunicorn logs the refusal itself


def install() -> None:
    """Have this gunicorn process answer its own refusals with `write_json_error`."""
    util.write_error = write_json_error

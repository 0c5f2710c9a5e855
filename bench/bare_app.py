"""The bare-gunicorn baseline: a WSGI app that reads the body and returns a fixed JSON answer.

Served by the same gunicorn config as the product (one gthread worker, pinned), so the difference
between it and the full path is what Django, auth, validation, the model and the ledger cost.
"""

from collections.abc import Callable, Iterable
from typing import Any

BODY = b'{"predictions":[151.0],"model_version":"1"}'
HEADERS = [("Content-Type", "application/json"), ("Content-Length", str(len(BODY)))]


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    length = int(environ.get("CONTENT_LENGTH") or 0)
    if length:
        environ["wsgi.input"].read(length)
    start_response("200 OK", HEADERS)
    return [BODY]

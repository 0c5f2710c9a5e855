"""One error envelope for the whole API.

`/v1` answers `{"error": {"type", "code", "message", "param", "request_id"}}`; the Open Inference
Protocol face (`/v2`) answers its spec's `{"error": "<message>"}`. Domain code raises `APIError`
subclasses; everything else is translated here, and nothing unexpected leaks to a client.
"""

import logging
from typing import Any

from django.core.exceptions import PermissionDenied, RequestDataTooBig, SuspiciousOperation
from django.http import Http404, HttpRequest, HttpResponse
from rest_framework import exceptions as drf
from rest_framework.response import Response

from .renderers import dumps

logger = logging.getLogger(__name__)

TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    406: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "unavailable_error",
}


class APIError(Exception):
    status_code = 400
    code = "invalid_request"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        status_code: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.code
        self.param = param
        self.status_code = status_code or self.status_code
        self.headers = headers or {}


class InvalidInput(APIError):
    status_code = 400
    code = "invalid_input"


class NotFound(APIError):
    status_code = 404
    code = "not_found"


class Conflict(APIError):
    status_code = 409
    code = "conflict"


class PayloadTooLarge(APIError):
    status_code = 413
    code = "payload_too_large"


class Unprocessable(APIError):
    status_code = 422
    code = "unprocessable"


class Unavailable(APIError):
    status_code = 503
    code = "unavailable"


def is_v2(path: str) -> bool:
    return path.lstrip("/").startswith("v2")  # "//v2/...": a base URL ending in "/"


def _is_api(path: str) -> bool:
    return path.lstrip("/").startswith(("v1", "v2", "api"))


def envelope(*, status: int, code: str, message: str, param: str | None, request_id: str) -> dict[str, Any]:
    return {
        "error": {
            "type": TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error"),
            "code": code,
            "message": message,
            "param": param,
            "request_id": request_id,
        }
    }


def error_body(request: HttpRequest, *, status: int, code: str, message: str, param: str | None = None) -> Any:
    if is_v2(request.path):
        return {"error": message}
    return envelope(
        status=status, code=code, message=message, param=param, request_id=getattr(request, "request_id", "")
    )


def error_response(
    request: HttpRequest,
    *,
    status: int,
    code: str,
    message: str,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> HttpResponse:
    """A plain Django response carrying the envelope (for middleware and URL-level errors)."""
    body = error_body(request, status=status, code=code, message=message, param=param)
    response = HttpResponse(dumps(body), status=status, content_type="application/json")
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def _first_field_error(detail: Any, prefix: str = "") -> tuple[str | None, str]:
    if isinstance(detail, dict):
        for field, value in detail.items():
            name = field if field != "non_field_errors" else ""
            param = f"{prefix}.{name}".strip(".") if name else (prefix or None)
            sub_param, message = _first_field_error(value, param or "")
            return sub_param or param, message
    if isinstance(detail, list) and detail:
        return _first_field_error(detail[0], prefix)
    return (prefix or None), str(detail)


def _translate(exc: Exception) -> tuple[int, str, str, str | None, dict[str, str]]:
    if isinstance(exc, APIError):
        return exc.status_code, exc.code, exc.message, exc.param, exc.headers
    if isinstance(exc, RequestDataTooBig):
        return 413, "payload_too_large", "The request body is larger than this server accepts.", None, {}
    if isinstance(exc, SuspiciousOperation):  # e.g. more form fields or files than Django parses
        return 400, "bad_request", "The request was refused as malformed.", None, {}
    if isinstance(exc, drf.ValidationError):
        param, message = _first_field_error(exc.detail)
        return 400, "invalid_request", message, param, {}
    if isinstance(exc, (drf.NotAuthenticated, drf.AuthenticationFailed)):
        from .auth import WWW_AUTHENTICATE

        # DRF's view sets the challenge of its first authentication class (Basic on staff endpoints);
        # the gateway's fast routes raise these without one: theirs is the API key's.
        challenge = getattr(exc, "auth_header", None) or WWW_AUTHENTICATE
        code = "invalid_api_key" if challenge.startswith("Bearer") else "not_authenticated"
        return 401, code, str(exc.detail), None, {"WWW-Authenticate": challenge}
    if isinstance(exc, (drf.PermissionDenied, PermissionDenied)):
        message = str(getattr(exc, "detail", "")) or "You may not do this."
        if message.startswith("CSRF Failed"):  # DRF's SessionAuthentication: a signed-in browser session's POST
            return 403, "csrf_failed", f"{message}. Send the csrftoken cookie's value as X-CSRFToken.", None, {}
        return 403, "insufficient_scope", message, None, {}
    if isinstance(exc, (drf.NotFound, Http404)):
        return 404, "not_found", "Not found.", None, {}
    if isinstance(exc, drf.ParseError):  # our JSON parser's, or a multipart/form body's (DRF's parsers)
        code = "invalid_json" if exc.get_codes() == "invalid_json" else "invalid_body"
        return 400, code, str(exc.detail), None, {}
    if isinstance(exc, drf.MethodNotAllowed):
        return 405, "method_not_allowed", str(exc.detail), None, {}
    if isinstance(exc, drf.UnsupportedMediaType):
        return 415, "unsupported_media_type", str(exc.detail), None, {}
    if isinstance(exc, drf.NotAcceptable):
        return 406, "not_acceptable", str(exc.detail), None, {}
    if isinstance(exc, drf.Throttled):
        wait = int(getattr(exc, "wait", None) or 1)
        return 429, "rate_limited", "Too many requests.", None, {"Retry-After": str(wait)}
    if isinstance(exc, drf.APIException):
        return exc.status_code, str(exc.default_code), str(exc.detail), None, {}
    return 500, "internal_error", "The server failed to handle this request; it has been logged.", None, {}


def _log(exc: Exception, status: int) -> None:
    """A bug is logged with its traceback; a 5xx we raise on purpose (Stripe or a model unavailable)
    is an expected outcome, logged as a warning without one."""
    if isinstance(exc, APIError):
        if status >= 500:
            logger.warning("%s: %s", exc.code, exc.message, extra={"status": status})
    elif status >= 500:
        logger.exception("unhandled error", exc_info=exc)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response:
    """DRF's EXCEPTION_HANDLER: every error leaves as the envelope, never as HTML or a traceback."""
    request = context["request"]._request
    status, code, message, param, headers = _translate(exc)
    _log(exc, status)
    body = error_body(request, status=status, code=code, message=message, param=param)
    return Response(body, status=status, headers=headers)


def exception_response(request: HttpRequest, exc: Exception) -> HttpResponse:
    """The envelope for an exception raised outside DRF (the gateway's fast routes)."""
    status, code, message, param, headers = _translate(exc)
    _log(exc, status)
    return error_response(request, status=status, code=code, message=message, param=param, headers=headers)


def bad_request_view(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """Django's 400 (a SuspiciousOperation such as a Host not in ALLOWED_HOSTS) on an API path."""
    if _is_api(request.path):
        return error_response(request, status=400, code="bad_request", message="The request was refused as malformed.")
    from django.views.defaults import bad_request

    return bad_request(request, exception or Exception())


def not_found_view(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _is_api(request.path):
        message = "No such endpoint."
        if request.path.startswith("//"):
            message = "No such endpoint: the path starts with '//' (does your base URL end with '/'?)."
        return error_response(request, status=404, code="not_found", message=message)
    from django.views.defaults import page_not_found

    return page_not_found(request, exception or Http404())


def server_error_view(request: HttpRequest) -> HttpResponse:
    if _is_api(request.path):
        return error_response(
            request,
            status=500,
            code="internal_error",
            message="The server failed to handle this request; it has been logged.",
        )
    from django.views.defaults import server_error

    return server_error(request)

"""Request ids, API-key resolution, body caps and the usage ledger, around every API call."""

import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import DisallowedHost
from django.http import HttpRequest, HttpResponse, UnreadablePostError

from .auth import AuthError, access_refusal, authenticate_key
from .errors import error_response, exception_response
from .logging import request_id_var
from .metrics import API_CALLS, API_LATENCY
from .wsgi_input import BODY_ERROR, BODY_OVER_LIMIT, max_body_bytes

_CLIENT_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
API_PREFIXES = ("/v1/", "/v2/", "/v1", "/v2")
PUBLIC_PREFIXES = ("/v2/health/",)


def new_request_id() -> str:
    return "req_" + uuid.uuid4().hex


class RequestIdMiddleware:
    """`X-Request-Id` on every response: the client's (if well-formed) or a fresh one.

    `request.request_id` is what the client sees; `request.ledger_id` is always server-generated and
    unique, so a client reusing its own id can never collide in the usage ledger.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        ledger_id = new_request_id()
        client_id = request.META.get("HTTP_X_REQUEST_ID", "")
        request.ledger_id = ledger_id  # type: ignore[attr-defined]
        request.client_request_id = client_id if _CLIENT_ID.match(client_id) else None  # type: ignore[attr-defined]
        request.request_id = request.client_request_id or ledger_id  # type: ignore[attr-defined]
        token = request_id_var.set(request.request_id)  # type: ignore[attr-defined]
        try:
            response = self.get_response(request)
        finally:
            request_id_var.reset(token)
        response["X-Request-Id"] = request.request_id  # type: ignore[attr-defined]
        return response


@dataclass
class UsageContext:
    """What a view tells the ledger about the call it served."""

    face: str = "metadata"
    model_version_id: int | None = None
    units: int = 0
    meter: str = ""
    answer: Any = None  # billing's IdempotentAnswer: stored by the same statement as the ledger row
    # billing's quota check for the call's rows, once the view knows them (None: nothing to check)
    hold: Callable[[int], None] | None = None


def usage_of(request: object) -> UsageContext:
    raw = getattr(request, "_request", request)
    usage = getattr(raw, "usage", None)
    if usage is None:
        usage = UsageContext()
        raw.usage = usage  # type: ignore[attr-defined]
    return usage


@dataclass(frozen=True)
class FastRoute:
    """An API operation the gateway serves itself: `handler(request, **match.groupdict())`.

    For key-authenticated JSON calls on the hot path (online inference) the rest of the middleware
    stack (sessions, CSRF, messages), URL resolving and DRF's dispatch cost more than the model.
    The handler is the same function the operation's DRF view calls; the gateway does the checks
    DRF would (key, scope, Host) and turns exceptions into the same envelope.
    """

    pattern: re.Pattern[str]
    handler: Callable[..., HttpResponse]
    scope: str
    face: str  # the ledger's name for the operation, also for a call refused before the handler ran


_PLAIN_ACCEPT = frozenset({"", "*/*", "application/json"})


def fast_route_match(request: HttpRequest, routes: tuple[FastRoute, ...]) -> tuple[FastRoute, dict[str, str]] | None:
    """The fast route for this request, or None: only POSTs whose answer DRF's content negotiation
    already knows (JSON) and that carry no query string (`?format=`) take it."""
    return fast_route_for(request.META, request.path_info, routes)


def fast_route_for(
    meta: Mapping[str, Any], path_info: str, routes: tuple[FastRoute, ...]
) -> tuple[FastRoute, dict[str, str]] | None:
    """`fast_route_match` for a request not made yet: its WSGI environ and its decoded path."""
    if (
        meta.get("REQUEST_METHOD") != "POST"
        or meta.get("QUERY_STRING")
        or meta.get("HTTP_ACCEPT", "") not in _PLAIN_ACCEPT
    ):
        return None
    for route in routes:
        match = route.pattern.match(path_info)
        if match is not None:
            return route, match.groupdict()
    return None


def _host_refusal(request: HttpRequest) -> HttpResponse | None:
    """ALLOWED_HOSTS on an API path, answered with the envelope: Django's own answer is an HTML page
    (with DEBUG on, as `make run` is, a traceback and the settings)."""
    try:
        request.get_host()
    except DisallowedHost:
        return error_response(
            request,
            status=400,
            code="invalid_host",
            message="The Host header names no host this server answers for.",
        )
    return None


class APIGatewayMiddleware:
    """Resolves the API key, refuses oversized bodies, and records each authenticated call.

    The ledger row is written (and committed) before the response leaves this process, so a worker
    killed right after answering has already recorded the call.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        # Imported here, once: billing's modules need the app registry, which is ready by now.
        from billing import gateway  # rate limits, quotas, idempotency (billing owns them)
        from billing.services import usage_record
        from inference.urls import fast_routes

        self.billing = gateway
        self.usage_record = usage_record
        self.fast_routes: tuple[FastRoute, ...] = fast_routes

    def __call__(self, request: HttpRequest) -> HttpResponse:
        path = request.path
        if not path.startswith(API_PREFIXES):
            return self.get_response(request)
        refused = _host_refusal(request)
        if refused is not None or path.startswith(PUBLIC_PREFIXES):
            return refused or self.get_response(request)
        started = time.perf_counter()
        request.principal = None  # type: ignore[attr-defined]
        request.auth_error = None  # type: ignore[attr-defined]
        header = request.META.get("HTTP_AUTHORIZATION")
        if header is not None:
            try:
                request.principal = authenticate_key(header)  # type: ignore[attr-defined]
            except AuthError as exc:
                request.auth_error = exc.message  # type: ignore[attr-defined]
        response = self.billing.admit(request) or self._respond(request)
        response = self.billing.settle(request, response)
        usage = usage_of(request)
        if usage.face == UsageContext.face and response.status_code >= 400:  # refused before the view ran
            usage.face = next((r.face for r in self.fast_routes if r.pattern.match(request.path_info)), usage.face)
        if usage.model_version_id is not None and "X-Model-Version" not in response:
            response["X-Model-Version"] = str(getattr(request, "model_version_number", ""))
        if request.principal is not None:  # type: ignore[attr-defined]
            elapsed = time.perf_counter() - started
            API_CALLS.labels(usage.face, str(response.status_code)).inc()
            API_LATENCY.labels(usage.face).observe(elapsed)

            billed = self.usage_record(
                request_id=request.ledger_id,  # type: ignore[attr-defined]
                client_request_id=request.client_request_id,  # type: ignore[attr-defined]
                principal=request.principal,  # type: ignore[attr-defined]
                face=usage.face,
                meter=usage.meter,
                model_version_id=usage.model_version_id,
                units=usage.units if response.status_code < 400 else 0,
                status_code=response.status_code,
                latency_ms=elapsed * 1000.0,
                answer=usage.answer,
            )
            if not billed:  # another execution of the same Idempotency-Key was recorded first
                response = self.billing.lost(request)
        if not response.streaming and not response.has_header("Content-Length"):
            # As CommonMiddleware sets it, for the answers it does not see (the fast routes', the gateway's
            # refusals): without it gunicorn frames the answer in chunks, one more send() per response.
            response["Content-Length"] = str(len(response.content))
        return response

    def _respond(self, request: HttpRequest) -> HttpResponse:
        refused = request.META.get(BODY_ERROR)  # a body wsgi_input.PlainBody could not make plain
        if refused is not None:
            status, code, message = refused
            return error_response(request, status=status, code=code, message=message)
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        limit = max_body_bytes(request.META)
        if length > limit:
            size = "" if request.META.get(BODY_OVER_LIMIT) else f" ({length} bytes)"  # else: read only to limit + 1
            return error_response(
                request,
                status=413,
                code="payload_too_large",
                message=f"The request body{size} is over the {limit}-byte limit.",
            )
        # Matched already when the WSGI handler took the request on its fast path (apiservice/handler.py).
        fast = getattr(request, "fast_route", None) or fast_route_match(request, self.fast_routes)
        if fast is None:
            return self.get_response(request)
        route, kwargs = fast  # the Host was checked on the way in (__call__), as CommonMiddleware would
        refusal = access_refusal(request, scope=route.scope)
        if refusal is not None:
            return exception_response(request, refusal)
        try:
            short = len(request.body) < length  # the client closed its side before sending the whole body
        except UnreadablePostError:  # or the connection broke while the body was read
            short = True
        if short:
            return error_response(
                request,
                status=400,
                code="invalid_body",
                message=f"The request body ended before its Content-Length ({length} bytes).",
            )
        try:
            return route.handler(request, **kwargs)
        except Exception as exc:
            return exception_response(request, exc)

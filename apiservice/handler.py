"""Django's WSGI handler, with the gateway's fast routes served outside Django's request cycle.

A request the gateway serves itself (`FastRoute`: online inference, `:predict` and `/infer`) goes
through the middleware listed before the gateway in `MIDDLEWARE` (the request id, `SecurityMiddleware`:
its HTTPS redirect and headers) and the gateway, each wrapped as Django wraps middleware (an exception
becomes the 500 envelope), but not WhiteNoise (static files only) nor what Django's handler adds around
the chain: the `request_started` / `request_finished` signals, the script-prefix and URL-conf
thread-locals, and closing the response. In a loaded worker that was ~90 µs of CPU per one-row call,
about 15 % of it (docs/benchmarks.md, optimisation 10). 4xx and 5xx are logged as Django logs them, and
the database connection is checked at the end as `request_finished` would (`close_if_unusable_or_obsolete`:
a broken connection, or one past `CONN_MAX_AGE`, is closed). Every other request takes Django's own path.
"""

from collections.abc import Callable, Iterable, Iterator
from typing import Any, cast

from django.conf import settings
from django.core.handlers.exception import convert_exception_to_response
from django.core.handlers.wsgi import WSGIHandler, get_path_info
from django.db import DEFAULT_DB_ALIAS, connections
from django.http import HttpRequest, HttpResponse
from django.utils.log import log_response
from django.utils.module_loading import import_string

from .middleware import APIGatewayMiddleware, FastRoute, fast_route_for

Handler = Callable[[HttpRequest], HttpResponse]
GATEWAY = "apiservice.middleware.APIGatewayMiddleware"
STATIC_FILES_ONLY = frozenset({"whitenoise.middleware.WhiteNoiseMiddleware"})


def fast_route_middleware() -> list[str]:
    """The middleware a fast-route request passes before the gateway: those `MIDDLEWARE` lists before
    it, less the ones that act on static files only."""
    before = settings.MIDDLEWARE[: settings.MIDDLEWARE.index(GATEWAY)]
    return [path for path in before if path not in STATIC_FILES_ONLY]


class APIHandler(WSGIHandler):
    def __init__(self) -> None:
        super().__init__()
        gateway = APIGatewayMiddleware(self._no_fast_route)
        self._routes = gateway.fast_routes
        # Each layer wrapped as Django wraps middleware; none is async, so every answer is an HttpResponse.
        chain = cast(Handler, convert_exception_to_response(gateway))
        for path in reversed(fast_route_middleware()):
            chain = cast(Handler, convert_exception_to_response(import_string(path)(chain)))
        self._fast_chain = chain

    @staticmethod
    def _no_fast_route(request: HttpRequest) -> HttpResponse:
        # The gateway passes a request on only when no fast route matches it, and this chain gets only
        # requests a fast route matches (the same `fast_route_match`).
        raise AssertionError(f"{request.path_info} reached the fast chain without a fast route")

    def __call__(  # type: ignore[override]  # a WSGI app returns the body's chunks
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        match = self._fast_route(environ)
        if match is None:
            answer = super().__call__(environ, start_response)
            return _NoBody(answer) if environ.get("REQUEST_METHOD") == "HEAD" else answer
        request = self.request_class(environ)
        request.fast_route = match  # type: ignore[attr-defined]  # the gateway serves it without matching again
        return self._serve_fast(request, start_response)

    def _fast_route(self, environ: dict[str, Any]) -> tuple[FastRoute, dict[str, str]] | None:
        """The fast route of this request, matched on its path as Django decodes it (`get_path_info`
        reads the environ; a WSGIRequest would rewrite it)."""
        if environ.get("REQUEST_METHOD") != "POST" or environ.get("SCRIPT_NAME") or settings.FORCE_SCRIPT_NAME:
            return None
        return fast_route_for(environ, get_path_info(environ), self._routes)

    def _serve_fast(self, request: HttpRequest, start_response: Callable[..., Any]) -> Iterable[bytes]:
        response = self._fast_chain(request)
        if response.status_code >= 400:
            log_response("%s: %s", response.reason_phrase, request.path, response=response, request=request)
        connections[DEFAULT_DB_ALIAS].close_if_unusable_or_obsolete()
        cookies = [("Set-Cookie", cookie.output(header="")) for cookie in response.cookies.values()]
        start_response(f"{response.status_code} {response.reason_phrase}", [*response.items(), *cookies])
        if response.streaming:  # none of the fast routes streams; closing it sends request_finished
            return response
        return [response.content]


class _NoBody:
    """The answer to a HEAD request: its headers (Content-Length included, as for GET) and no body, as
    RFC 9110 says. Django leaves the body to the server; gunicorn drops it with a warning per request
    (a load balancer's HEAD health checks filled the log)."""

    def __init__(self, answer: Iterable[bytes]) -> None:
        self._answer = answer

    def __iter__(self) -> Iterator[bytes]:
        return iter(())

    def close(self) -> None:
        close = getattr(self._answer, "close", None)
        if close is not None:
            close()  # Django's response: request_finished, the file of a FileResponse

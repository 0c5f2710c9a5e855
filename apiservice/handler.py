"""Django's WSGI handler, with the gateway's fast routes served outside Django's request cycle.

A request the gateway serves itself (`FastRoute`: online inference, `:predict` and `/infer`) needs
three of the layers Django's handler puts around it: the request id, `SecurityMiddleware` (its HTTPS
redirect and headers) and the gateway. The rest does nothing for it yet cost ~50 µs of CPU per call,
about 15 % of a one-row forest call (docs/benchmarks.md): the `request_started` / `request_finished`
signals, the script-prefix and URL-conf thread-locals, WhiteNoise, and closing the response. Such a
request goes through those three layers only, each wrapped as Django wraps middleware (an exception
becomes the 500 envelope), 4xx and 5xx are logged as Django logs them, and the database connection is
checked at the end as `request_finished` would (`close_if_unusable_or_obsolete`: a broken connection,
or one past `CONN_MAX_AGE`, is closed). Every other request takes Django's own path.
"""

from collections.abc import Callable, Iterable
from typing import Any, cast

from django.conf import settings
from django.core.handlers.exception import convert_exception_to_response
from django.core.handlers.wsgi import WSGIHandler, get_path_info
from django.db import DEFAULT_DB_ALIAS, connections
from django.http import HttpRequest, HttpResponse
from django.middleware.security import SecurityMiddleware
from django.utils.log import log_response

from .middleware import APIGatewayMiddleware, RequestIdMiddleware, fast_route_for

Handler = Callable[[HttpRequest], HttpResponse]


class APIHandler(WSGIHandler):
    def __init__(self) -> None:
        super().__init__()
        gateway = APIGatewayMiddleware(self._no_fast_route)
        self._routes = gateway.fast_routes
        # The three layers, each wrapped as Django wraps middleware; none is async, so every answer is
        # an HttpResponse (the casts).
        security = convert_exception_to_response(SecurityMiddleware(convert_exception_to_response(gateway)))
        self._fast_chain = cast(Handler, convert_exception_to_response(RequestIdMiddleware(cast(Handler, security))))

    @staticmethod
    def _no_fast_route(request: HttpRequest) -> HttpResponse:
        # The gateway passes a request on only when no fast route matches it, and this chain gets only
        # requests a fast route matches (the same `fast_route_match`).
        raise AssertionError(f"{request.path_info} reached the fast chain without a fast route")

    def __call__(  # type: ignore[override]  # a WSGI app returns the body's chunks
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        # Matched on the path as Django decodes it (`get_path_info` reads the environ, WSGIRequest rewrites it).
        if (
            environ.get("REQUEST_METHOD") == "POST"
            and not environ.get("SCRIPT_NAME")
            and not settings.FORCE_SCRIPT_NAME
            and fast_route_for(environ, get_path_info(environ), self._routes) is not None
        ):
            return self._serve_fast(self.request_class(environ), start_response)
        return super().__call__(environ, start_response)

    def _serve_fast(self, request: HttpRequest, start_response: Callable[..., Any]) -> Iterable[bytes]:
        response = self._fast_chain(request)
        if response.status_code >= 400:
            log_response("%s: %s", response.reason_phrase, request.path, response=response, request=request)
        connections[DEFAULT_DB_ALIAS].close_if_unusable_or_obsolete()
        start_response(f"{response.status_code} {response.reason_phrase}", list(response.items()))
        if response.streaming:  # none of the fast routes streams; closing it sends request_finished
            return response
        return [response.content]

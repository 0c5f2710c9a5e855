"""Operational endpoints outside the API: liveness for the process, metrics for Prometheus."""

import hmac

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_GET

from . import metrics as metrics_module


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """Not public: needs `Authorization: Bearer <METRICS_TOKEN>`; off (404) when no token is set."""
    token = settings.METRICS_TOKEN
    if not token:
        return JsonResponse({"error": "not found"}, status=404)
    presented = request.META.get("HTTP_AUTHORIZATION", "").removeprefix("Bearer ").strip()
    if not hmac.compare_digest(presented.encode(), token.encode()):
        response = JsonResponse({"error": "unauthorised"}, status=401)
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(metrics_module.render(), content_type="text/plain; version=0.0.4")

"""Upload caps for the portal's and the admin's forms, applied from `Content-Length` before the body is read.

Django streams every file of a multipart body to a temporary file (`FILE_UPLOAD_HANDLERS`) before a form
can look at its size, and `CsrfViewMiddleware` reads `request.POST` (so the whole body) before the view
runs: a 5 GB "model" was written to disk, then read into memory, only to be refused for being over
`MODEL_MAX_BYTES`. This middleware, placed before `CsrfViewMiddleware`, answers 413 from the length alone.
Django reads no more than `Content-Length` bytes (a body without one reads as empty), so a body under
its cap cannot grow past it. The API (`/v1`, `/v2`) has its own cap in `APIGatewayMiddleware`.
"""

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from .wsgi_input import MULTIPART_OVERHEAD_BYTES

# The views that take a file, by URL name, and the setting that caps the file. Any other multipart form
# is held to `DATA_UPLOAD_MAX_MEMORY_SIZE` (`MAX_REQUEST_BYTES`), as Django holds other form bodies.
UPLOAD_CAPS = {
    "portal-batches": "FILE_MAX_BYTES",
    "staff:version-upload": "MODEL_MAX_BYTES",
    "admin:models_registry_modelversion_add": "MODEL_MAX_BYTES",
}
_API_PREFIXES = ("/v1/", "/v2/")


def upload_cap_bytes(*, view_name: str) -> int:
    """The largest multipart body the view takes: its file's cap plus the form around it."""
    setting = UPLOAD_CAPS.get(view_name)
    if setting is None:
        return int(settings.DATA_UPLOAD_MAX_MEMORY_SIZE)
    return int(getattr(settings, setting)) + MULTIPART_OVERHEAD_BYTES


class UploadLimitMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_view(self, request: HttpRequest, view_func: Any, args: Any, kwargs: Any) -> HttpResponse | None:
        if request.content_type != "multipart/form-data" or request.path_info.startswith(_API_PREFIXES):
            return None
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return None  # Django reads such a body as empty
        match = request.resolver_match
        limit = upload_cap_bytes(view_name=match.view_name if match else "")
        if length <= limit:
            return None
        context = {"length": length, "limit": limit}
        return render(request, "413.html", context, status=413)

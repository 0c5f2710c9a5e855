from django.contrib import admin
from django.urls import include, path, re_path
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from . import errors, views

handler400 = "apiservice.errors.bad_request_view"
handler404 = "apiservice.errors.not_found_view"
handler500 = "apiservice.errors.server_error_view"

urlpatterns = [
    path("", include("inference.urls")),
    path("", include("models_registry.urls")),
    path("", include("billing.urls")),
    path("", include("edge.urls")),
    path("", include("portal.urls")),
    path("", include("batches.urls")),
    path("metrics", views.metrics, name="metrics"),
    path("healthz", views.healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    # Any other API path: the JSON envelope's 404, also with DEBUG on (where handler404 is not used).
    # "//v1/...": a base URL ending in "/" (Django strips one "/"; the group keeps the check urls.W002,
    # meant for include() prefixes, from reading the extra slashes as a mistake).
    re_path(r"^(?:/*)v[12](?:/.*)?$", csrf_exempt(errors.not_found_view)),  # any method: no CSRF page
]

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from . import views

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
]

import re

from django.urls import path

from apiservice.converters import NameConverter, RefConverter
from apiservice.middleware import FastRoute

from . import views

urlpatterns = [
    path("v1/models/<mname:model>:predict", views.PredictDefaultView.as_view(), name="predict"),
    path(
        "v1/models/<mname:model>/versions/<ref:version>:predict",
        views.PredictVersionView.as_view(),
        name="predict-version",
    ),
    path("v1/models/<mname:model>/labels/<ref:alias>:predict", views.PredictLabelView.as_view(), name="predict-label"),
    path("v2/health/live", views.LiveView.as_view(), name="v2-live"),
    path("v2/health/ready", views.ReadyView.as_view(), name="v2-ready"),
    path("v2", views.ServerMetadataView.as_view(), name="v2-server"),
    path("v2/models/<mname:model>", views.ModelMetadataDefaultView.as_view(), name="v2-model"),
    path("v2/models/<mname:model>/ready", views.ModelReadyDefaultView.as_view(), name="v2-model-ready"),
    path("v2/models/<mname:model>/infer", views.InferDefaultView.as_view(), name="v2-infer"),
    path("v2/models/<mname:model>/versions/<ref:version>", views.ModelVersionMetadataView.as_view(), name="v2-version"),
    path(
        "v2/models/<mname:model>/versions/<ref:version>/ready",
        views.ModelVersionReadyView.as_view(),
        name="v2-version-ready",
    ),
    path(
        "v2/models/<mname:model>/versions/<ref:version>/infer",
        views.InferVersionView.as_view(),
        name="v2-version-infer",
    ),
]

_NAME, _REF = NameConverter.regex, RefConverter.regex

# The same operations as `predict*` and `v2-*infer` above, served by `APIGatewayMiddleware` without
# the session/CSRF/message middleware, URL resolving and DRF, none of which a key-authenticated JSON
# call uses. Same handlers (`views.predict`, `views.infer`), same checks, same envelope.
fast_routes = (
    FastRoute(re.compile(rf"^/v1/models/(?P<model>{_NAME}):predict$"), views.predict, "predict", "v1-predict"),
    FastRoute(
        re.compile(rf"^/v1/models/(?P<model>{_NAME})/versions/(?P<ref>{_REF}):predict$"),
        views.predict,
        "predict",
        "v1-predict",
    ),
    FastRoute(
        re.compile(rf"^/v1/models/(?P<model>{_NAME})/labels/(?P<alias>{_REF}):predict$"),
        views.predict,
        "predict",
        "v1-predict",
    ),
    FastRoute(re.compile(rf"^/v2/models/(?P<model>{_NAME})/infer$"), views.infer, "predict", "v2-infer"),
    FastRoute(
        re.compile(rf"^/v2/models/(?P<model>{_NAME})/versions/(?P<ref>{_REF})/infer$"),
        views.infer,
        "predict",
        "v2-infer",
    ),
)

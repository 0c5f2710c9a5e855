from django.urls import path

import apiservice.converters  # noqa: F401  (registers <mname:...>, <ref:...> and <pid:...>)

from . import views

app_name = "edge"

urlpatterns = [
    path("v1/edge/keys", views.KeysView.as_view(), name="keys"),
    path(
        "v1/models/<mname:model>/versions/<ref:version>/bundles",
        views.VersionBundlesView.as_view(),
        name="version-bundles",
    ),
    path("v1/bundles/<pid:bundle_id>", views.BundleDetailView.as_view(), name="bundle"),
    path("v1/bundles/<pid:bundle_id>/download", views.BundleDownloadView.as_view(), name="bundle-download"),
    path("v1/bundles/<pid:bundle_id>/file", views.BundleFileView.as_view(), name="bundle-file"),
]

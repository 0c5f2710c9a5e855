from django.urls import path

import apiservice.converters  # noqa: F401  (registers <mname:...> and <ref:...>)

from . import views

urlpatterns = [
    path("v1/models", views.ModelListView.as_view(), name="models"),
    path("v1/models/<mname:model>", views.ModelDetailView.as_view(), name="model"),
    path("v1/models/<mname:model>/versions", views.VersionListView.as_view(), name="model-versions"),
    path("v1/models/<mname:model>/versions/<ref:version>", views.VersionDetailView.as_view(), name="model-version"),
    path("v1/staff/models/<mname:model>/versions", views.StaffVersionCreateView.as_view(), name="staff-versions"),
    path("v1/staff/models/<mname:model>/aliases/<ref:alias>", views.StaffAliasView.as_view(), name="staff-alias"),
]

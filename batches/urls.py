from django.urls import path

import apiservice.converters  # noqa: F401  (registers <pid:...>)

from . import views

urlpatterns = [
    path("v1/files", views.FileListView.as_view(), name="files"),
    path("v1/files/<pid:file_id>", views.FileDetailView.as_view(), name="file"),
    path("v1/files/<pid:file_id>/content", views.FileContentView.as_view(), name="file-content"),
    path("v1/batches", views.BatchListView.as_view(), name="batches"),
    path("v1/batches/<pid:batch_id>", views.BatchDetailView.as_view(), name="batch"),
    path("v1/batches/<pid:batch_id>/cancel", views.BatchCancelView.as_view(), name="batch-cancel"),
]

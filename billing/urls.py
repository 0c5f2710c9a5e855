from django.urls import path

from . import views

urlpatterns = [
    path("v1/usage", views.UsageView.as_view(), name="usage"),
]

from django.urls import path

from . import views

urlpatterns = [
    path("v1/usage", views.UsageView.as_view(), name="usage"),
    path("v1/usage/export", views.UsageExportView.as_view(), name="usage-export"),
    path("v1/invoices", views.InvoicesView.as_view(), name="invoices"),
    path("v1/billing/checkout", views.CheckoutView.as_view(), name="billing-checkout"),
    path("v1/billing/portal", views.PortalView.as_view(), name="billing-portal"),
    path("v1/billing/webhook", views.StripeWebhookView.as_view(), name="billing-webhook"),
]

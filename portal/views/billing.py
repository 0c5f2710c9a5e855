"""Billing in the portal (plan, estimate, Checkout, Stripe's customer portal, invoices) and billing
health for staff (webhook events, usage reports, reconciliation). Billing's services do the work."""

from typing import Any

from django.contrib import messages
from django.db.models import Count, F
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from apiservice.errors import APIError
from billing import limits, payments, stripe_client
from billing import selectors as billing_selectors
from billing.models import Plan, ReconciliationIssue, StripeEvent, UsageReport

from ..access import portal_view, staff_view
from ..forms import UpgradeForm

NOT_CONFIGURED = (
    "Billing is not configured on this server (no Stripe keys): plans cannot be bought here yet. "
    "Usage is still recorded."
)


def billing_summary(*, organisation_id: int) -> dict[str, Any]:
    """The plan and the current period's estimate (for the billing page and the overview/usage tiles)."""
    plan, account = limits.plan_for_organisation(organisation_id=organisation_id)
    return {
        "plan": plan,
        "account": account,
        "estimate": billing_selectors.usage_estimate(organisation_id=organisation_id),
        "configured": stripe_client.configured(),
    }


@require_GET
@portal_view()
def billing(request: HttpRequest) -> HttpResponse:
    organisation_id = int(request.membership.organisation_id)  # type: ignore[attr-defined]
    context = billing_summary(organisation_id=organisation_id)
    # Subscribed: plans change in Stripe's customer portal (Checkout would add a second subscription).
    # Not (any more): every self-serve plan, the current one too when its subscription was cancelled.
    context["subscribed"] = context["account"] is not None and context["account"].is_subscribed
    plans = Plan.objects.filter(self_serve=True).order_by("code")
    context["plans"] = plans.none() if context["subscribed"] else plans
    context["is_owner"] = request.membership.role == "owner"  # type: ignore[attr-defined]
    context["not_configured"] = NOT_CONFIGURED
    invoices: dict[str, Any] = {"invoices": [], "upcoming": None, "has_more": False}
    # Pages of past invoices, newest first, as GET /v1/invoices pages them: after the last one shown.
    context["invoices_after"] = after = request.GET.get("invoices_after", "")[:255]
    if context["configured"]:
        try:
            invoices = payments.invoices_for(organisation_id=organisation_id, starting_after=after)
        except APIError as exc:
            context["invoices_error"] = exc.message
    context["invoices"] = invoices
    return render(request, "portal/billing.html", context)


def _stripe_redirect(request: HttpRequest, start: Any, **kwargs: Any) -> HttpResponse:
    if not stripe_client.configured():
        messages.error(request, NOT_CONFIGURED)
        return redirect("portal-billing")
    try:
        session = start(organisation_id=int(request.membership.organisation_id), **kwargs)  # type: ignore[attr-defined]
    except APIError as exc:
        messages.error(request, exc.message)
        return redirect("portal-billing")
    return redirect(session["url"])


@require_POST
@portal_view(owner=True)
def billing_checkout(request: HttpRequest) -> HttpResponse:
    """Owners: Stripe Checkout for a self-serve plan; Stripe sends them back to the billing page."""
    form = UpgradeForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose a plan.")
        return redirect("portal-billing")
    back = request.build_absolute_uri(reverse("portal-billing"))
    return _stripe_redirect(
        request,
        payments.checkout_start,
        plan_code=form.cleaned_data["plan"],
        success_url=back + "?checkout=success",
        cancel_url=back + "?checkout=cancelled",
    )


@require_POST
@portal_view(owner=True)
def billing_manage(request: HttpRequest) -> HttpResponse:
    """Owners: Stripe's customer portal (payment methods, invoices, cancellation)."""
    back = request.build_absolute_uri(reverse("portal-billing"))
    return _stripe_redirect(request, payments.portal_start, return_url=back)


# --- Staff ----------------------------------------------------------------------------------------


@require_GET
@staff_view
def billing_health(request: HttpRequest) -> HttpResponse:
    context = {
        "configured": stripe_client.configured(),
        "events": StripeEvent.objects.order_by("-received_at", "-id")[:50],
        "event_outcomes": StripeEvent.objects.values("outcome").annotate(n=Count("id")).order_by("outcome"),
        "reports": UsageReport.objects.select_related("organisation").order_by("-created_at")[:50],
        "report_statuses": UsageReport.objects.values("status").annotate(n=Count("id")).order_by("status"),
        "issues": ReconciliationIssue.objects.select_related("organisation")
        .annotate(difference=F("ours") - F("stripe"))
        .order_by("resolved", "-created_at")[:50],
    }
    return render(request, "staff/billing_health.html", context)

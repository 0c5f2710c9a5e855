"""Billing in the portal (plan, estimate, Checkout, portal, invoices), sign-up plan, key budgets, staff health."""

import io
from datetime import date, timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from apiservice.models import APIKey, Organisation
from billing.models import (
    BillingAccount,
    KeyLimit,
    Meter,
    Plan,
    PlanPrice,
    ReconciliationIssue,
    StripeEvent,
    UsageRecord,
    UsageReport,
)
from tests.billing.conftest import account_on, stripe, stripe_server  # noqa: F401  (fixtures)

NOT_CONFIGURED = "Billing is not configured on this server"


def ledger(org: Organisation, meter: str, units: int, n: int = 1) -> None:
    for i in range(n):
        UsageRecord.objects.create(
            request_id=f"{org.pk}-{meter}-{units}-{i}",
            organisation=org,
            face="online",
            meter=meter,
            units=units,
            status_code=200,
        )


def subscribed_through_checkout(owner_client: Client, stripe: Any) -> str:  # noqa: F811
    """The owner upgrades to pay-as-you-go in the portal and completes Stripe Checkout: the subscription id."""
    call_command("sync_stripe_catalog", stdout=io.StringIO())
    owner_client.post("/portal/billing/checkout/", {"plan": "payg"})
    session = next(o for o in stripe.objects.values() if o["object"] == "checkout.session")
    return str(stripe.complete_checkout(session["id"])["subscription"])


def test_it_shows_the_plan_and_the_estimate_without_stripe(member_client: Client, org: Organisation) -> None:
    account_on(org, "payg")
    ledger(org, Meter.ONLINE_PREDICTIONS, 1, n=40)  # 40 x 0.05 cents
    page = member_client.get("/portal/billing/").content.decode()
    assert "Pay as you go" in page and "0.02 USD" in page
    assert NOT_CONFIGURED in page and "Upgrade to" not in page
    assert "0.02 USD" in member_client.get("/portal/usage/").content.decode()  # the cost tile
    assert "Pay as you go" in member_client.get("/portal/").content.decode()  # the overview summary


def test_it_shows_money_with_two_decimals_and_sub_cent_amounts_in_full(
    member_client: Client, org: Organisation
) -> None:
    account_on(org, "payg")
    ledger(org, Meter.ONLINE_PREDICTIONS, 1, n=50)  # 50 x 0.05 cents = 0.025 USD
    ledger(org, Meter.BUNDLE_DOWNLOADS, 1, n=1)  # 0.20 USD
    page = member_client.get("/portal/billing/").content.decode()
    assert "0.23 USD" in page  # the estimate, as Stripe invoices it: 2.5 cents of predictions round to 3
    assert "<td>0.20</td>" in page  # a bundle download's amount, not "0.2"
    assert "<td>0.0005</td>" in page  # the per-prediction price, in full


def test_it_says_billing_is_not_configured_on_upgrade(owner_client: Client) -> None:
    response = owner_client.post("/portal/billing/checkout/", {"plan": "payg"}, follow=True)
    assert response.redirect_chain[-1][0] == "/portal/billing/"
    assert NOT_CONFIGURED in response.content.decode()
    response = owner_client.post("/portal/billing/manage/", follow=True)
    assert NOT_CONFIGURED in response.content.decode()


def test_it_sends_owners_to_stripe_checkout_and_the_customer_portal(
    owner_client: Client,
    org: Organisation,
    stripe: Any,  # noqa: F811
) -> None:
    call_command("sync_stripe_catalog", stdout=io.StringIO())
    page = owner_client.get("/portal/billing/").content.decode()
    assert "Upgrade to Pay as you go" in page and "No invoices yet." in page
    response = owner_client.post("/portal/billing/checkout/", {"plan": "payg"})
    assert response.status_code == 302 and response["Location"].startswith(stripe.url)
    assert BillingAccount.objects.get(organisation=org).stripe_customer_id
    response = owner_client.post("/portal/billing/manage/")
    assert response.status_code == 302 and "/p/session/" in response["Location"]
    refused = owner_client.post("/portal/billing/checkout/", {"plan": "enterprise"}, follow=True)
    assert "is not available through Checkout" in refused.content.decode()


def test_it_offers_checkout_again_after_the_plan_was_cancelled(
    owner_client: Client,
    org: Organisation,
    stripe: Any,  # noqa: F811
) -> None:
    """A cancelled Pay-as-you-go organisation (402 on every call) was offered no plan to subscribe to."""
    call_command("sync_stripe_catalog", stdout=io.StringIO())
    account_on(org, "payg", status="canceled", subscription_status="canceled", stripe_subscription_id="sub_old")
    page = owner_client.get("/portal/billing/").content.decode()
    assert "Subscribe to Pay as you go" in page
    response = owner_client.post("/portal/billing/checkout/", {"plan": "payg"})
    assert response.status_code == 302 and response["Location"].startswith(stripe.url)


def test_it_sends_a_subscribed_owner_to_the_customer_portal_to_change_plan(
    owner_client: Client,
    org: Organisation,
    stripe: Any,  # noqa: F811
) -> None:
    call_command("sync_stripe_catalog", stdout=io.StringIO())
    account_on(org, "free", status="active", subscription_status="active", stripe_subscription_id="sub_live")
    page = owner_client.get("/portal/billing/").content.decode()
    assert "Upgrade to" not in page and "Subscribe to" not in page
    assert "change plan" in page.lower() and "Manage payment" in page


def test_it_says_an_upgrade_waits_for_its_first_payment_while_the_plan_stays_as_it_was(
    owner_client: Client, org: Organisation
) -> None:
    """An `incomplete` subscription (3-D Secure not done yet) changes nothing, and the page said nothing."""
    account_on(org, "free", status="active", subscription_status="incomplete", stripe_subscription_id="sub_new")
    page = owner_client.get("/portal/billing/").content.decode()
    assert 'data-testid="payment-pending"' in page
    assert "waiting for its first payment" in page
    assert '<strong data-testid="plan-name">Free</strong>' in page
    account_on(org, "free", status="active", subscription_status="active", stripe_subscription_id="sub_new")
    assert "payment-pending" not in owner_client.get("/portal/billing/").content.decode()


def test_it_lists_invoices(owner_client: Client, org: Organisation, stripe: Any) -> None:  # noqa: F811
    subscription = subscribed_through_checkout(owner_client, stripe)
    customer = BillingAccount.objects.get(organisation=org).stripe_customer_id
    stripe.invoice_create(customer, subscription, status="paid", amount_due=1234, amount_paid=1234)
    page = owner_client.get("/portal/billing/").content.decode()
    assert "12.34 USD" in page and "upcoming" in page and "/pdf" in page


def test_it_pages_through_every_past_invoice(owner_client: Client, org: Organisation, stripe: Any) -> None:  # noqa: F811
    subscription = subscribed_through_checkout(owner_client, stripe)
    customer = BillingAccount.objects.get(organisation=org).stripe_customer_id
    made = [
        stripe.invoice_create(customer, subscription, status="paid", created=1_700_000_000 + i)["id"] for i in range(30)
    ]
    newest = owner_client.get("/portal/billing/")
    shown = [i["id"] for i in newest.context["invoices"]["invoices"]]
    assert shown == made[::-1][:24]
    page = newest.content.decode()
    assert f'href="?invoices_after={shown[-1]}">Older invoices' in page and "Newest invoices" not in page
    older = owner_client.get(f"/portal/billing/?invoices_after={shown[-1]}")
    assert [i["id"] for i in older.context["invoices"]["invoices"]] == made[::-1][24:]
    assert older.context["invoices"]["upcoming"] is None
    page = older.content.decode()
    assert "Newest invoices" in page and "Older invoices" not in page


def test_it_says_so_when_there_is_no_such_invoice_to_page_after(
    owner_client: Client,
    org: Organisation,
    stripe: Any,  # noqa: F811
) -> None:
    subscribed_through_checkout(owner_client, stripe)
    response = owner_client.get("/portal/billing/?invoices_after=in_nope")
    assert response.status_code == 200
    assert "No invoice &#x27;in_nope&#x27;" in response.content.decode()


def test_it_puts_a_new_organisation_on_the_free_plan(client: Client, db: Any) -> None:
    response = client.post(
        "/portal/signup/",
        {
            "organisation_name": "Fresh Co",
            "username": "fresh",
            "email": "fresh@example.com",
            "password1": "Very-secret-42",
            "password2": "Very-secret-42",
        },
    )
    assert response.status_code == 302
    account = BillingAccount.objects.get(organisation__name="Fresh Co")
    assert account.plan.code == "free"
    assert "Free" in client.get("/portal/billing/").content.decode()


def test_it_sets_a_monthly_budget_on_a_new_key(owner_client: Client, org: Organisation) -> None:
    form = owner_client.get("/portal/keys/").content.decode()
    assert "Monthly budget in units (optional)" in form
    data = {"name": "capped", "scopes": ["predict"], "monthly_budget_units": 500}
    response = owner_client.post("/portal/keys/", data)
    assert response.status_code == 200
    key = APIKey.objects.get(name="capped")
    assert KeyLimit.objects.get(api_key=key).monthly_budget_units == 500
    assert "budget 500 units/month" in owner_client.get("/portal/keys/").content.decode()
    bad = owner_client.post("/portal/keys/", {"name": "zero", "scopes": ["predict"], "monthly_budget_units": 0})
    assert "greater than or equal to 1" in bad.content.decode() and not APIKey.objects.filter(name="zero").exists()


@pytest.mark.parametrize("budget", ["1000000000000001", "9223372036854775808", "99999999999999999999999"])
def test_it_explains_a_budget_too_large_to_store(owner_client: Client, budget: str) -> None:
    data = {"name": "huge", "scopes": ["predict"], "monthly_budget_units": budget}
    response = owner_client.post("/portal/keys/", data, HTTP_HX_REQUEST="true")
    assert response.status_code == 200  # htmx swaps only successful answers: the form comes back with its error
    assert "Choose at most 1,000,000,000,000,000 units, or no budget." in response.content.decode()
    assert "new-key" not in response.content.decode()
    assert not APIKey.objects.filter(name="huge").exists()


def test_it_accepts_the_largest_budget(owner_client: Client) -> None:
    data = {"name": "roomy", "scopes": ["predict"], "monthly_budget_units": 10**15}
    owner_client.post("/portal/keys/", data, HTTP_HX_REQUEST="true")
    assert KeyLimit.objects.get(api_key__name="roomy").monthly_budget_units == 10**15


def test_it_estimates_revenue_for_staff(staff_client: Client, org: Organisation, other_org: Organisation) -> None:
    account_on(org, "payg")
    account_on(other_org, "enterprise")
    ledger(org, Meter.ONLINE_PREDICTIONS, 10, n=2)  # 20 x 0.05 = 1 cent
    ledger(other_org, Meter.BUNDLE_DOWNLOADS, 1, n=3)  # 3 x 10 = 30 cents
    page = staff_client.get("/staff/").content.decode()
    assert "0.31 USD" in page
    assert "bundle_downloads 0.30" in page and "online_predictions 0.01" in page


def test_it_estimates_revenue_for_staff_per_currency(
    staff_client: Client, org: Organisation, other_org: Organisation
) -> None:
    """An organisation on a plan in yen added its yen, divided by 100, to the dollars, all as USD."""
    account_on(org, "payg")
    account_on(other_org, "enterprise")
    Plan.objects.filter(code="enterprise").update(currency="jpy")
    PlanPrice.objects.filter(plan__code="enterprise", meter=Meter.BUNDLE_DOWNLOADS).update(unit_amount_decimal=15)
    ledger(org, Meter.ONLINE_PREDICTIONS, 10, n=2)  # 20 x 0.05 = 1 cent
    ledger(other_org, Meter.BUNDLE_DOWNLOADS, 1, n=3)  # 3 x 15 = 45 yen
    page = staff_client.get("/staff/").content.decode()
    assert "0.01 USD" in page and "45 JPY" in page
    assert "0.46 USD" not in page


def test_it_shows_staff_the_billing_health(staff_client: Client, org: Organisation) -> None:
    now = timezone.now()
    StripeEvent.objects.create(event_id="evt_1", type="invoice.paid", payload={}, outcome="ignored")
    UsageReport.objects.create(
        id="rep_1",
        organisation=org,
        meter=Meter.ONLINE_PREDICTIONS,
        stripe_customer_id="cus_1",
        units=7,
        rows=7,
        first_at=now,
        last_at=now,
        event_timestamp=now,
        status="failed",
        last_error="card exploded",
    )
    ReconciliationIssue.objects.create(
        organisation=org, meter=Meter.ONLINE_PREDICTIONS, day=date.today() - timedelta(days=1), ours=10, stripe=7
    )
    page = staff_client.get("/staff/billing/").content.decode()
    assert "evt_1" in page and "invoice.paid" in page and "ignored" in page
    assert "rep_1" in page and "card exploded" in page and "usage reports: failed" in page
    assert "<td>3</td>" in page  # ours 10 vs Stripe 7


def test_invoice_amounts_read_in_major_units_whatever_the_currency() -> None:
    from portal.templatetags.portal_tags import minor_money, money

    assert (minor_money(1234, "usd"), minor_money(500, "JPY"), minor_money(0, "eur")) == ("12.34", "500", "0.00")
    assert (money("0"), money("12.5"), money("0.000300")) == ("0.00", "12.50", "0.0003")


def test_invoice_amounts_in_a_three_decimal_currency_read_in_major_units() -> None:
    from portal.templatetags.portal_tags import minor_money

    assert minor_money(5124, "kwd") == "5.124"  # Stripe counts Kuwaiti dinars in fils, 1,000 to the dinar

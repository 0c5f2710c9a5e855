import io
import json
import time

import pytest
from django.core.management import call_command
from django.test import override_settings

from billing import limits, payments, stripe_client
from billing.models import BillingAccount, BillingMeter, PlanPrice, StripeEvent
from tests.billing.conftest import IRIS_ROW, account_on


@pytest.fixture
def synced(stripe, db):
    call_command("sync_stripe_catalog", stdout=io.StringIO())
    return stripe


def checkout_and_subscribe(api, stripe, status="active"):
    session = api.post_json("/v1/billing/checkout", {"plan": "payg"}).json()
    return stripe.complete_checkout(session["id"], status=status)


def second_subscription(stripe, org, *, customer_id, status="active"):
    """Another Pay-as-you-go subscription of the same customer, as a second Checkout (or Stripe's
    dashboard) makes it; its id."""
    prices = [p.stripe_price_id for p in PlanPrice.objects.filter(plan__code="payg")]
    session = stripe_client.checkout_session_create(
        customer_id=customer_id,
        price_ids=prices,
        organisation_id=org.pk,
        success_url="https://x",
        cancel_url="https://x",
    )
    return stripe.complete_checkout(session["id"], status=status)["subscription"]


def post_event(client, stripe, event, **sign_options):
    payload = json.dumps(event).encode()
    return client.post(
        "/v1/billing/webhook",
        data=payload,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=stripe.sign(payload, **sign_options),
    )


def test_it_syncs_the_catalogue_idempotently(synced):
    meter_ids = set(BillingMeter.objects.values_list("stripe_meter_id", flat=True))
    price_ids = set(PlanPrice.objects.values_list("stripe_price_id", flat=True))
    assert "" not in meter_ids
    assert "" not in price_ids
    call_command("sync_stripe_catalog", stdout=io.StringIO())
    assert set(PlanPrice.objects.values_list("stripe_price_id", flat=True)) == price_ids
    assert len([o for o in synced.objects.values() if o["object"] == "price"]) == len(price_ids)


def test_it_replaces_a_price_when_staff_change_it(synced):
    price = PlanPrice.objects.get(plan__code="payg", meter="online_predictions")
    old = price.stripe_price_id
    PlanPrice.objects.filter(pk=price.pk).update(unit_amount_decimal="0.04")
    call_command("sync_stripe_catalog", stdout=io.StringIO())
    price.refresh_from_db()
    assert price.stripe_price_id != old
    assert synced.objects[old]["active"] is False
    assert synced.objects[price.stripe_price_id]["lookup_key"] == "mm_payg_online_predictions"


def test_it_creates_one_customer_per_organisation_and_starts_checkout(api, synced, org):
    first = api.post_json("/v1/billing/checkout", {"plan": "payg"})
    second = api.post_json("/v1/billing/checkout", {"plan": "payg"})
    assert first.status_code == 201, first.content
    assert first.json()["url"].startswith(synced.url)
    customers = [o for o in synced.objects.values() if o["object"] == "customer"]
    assert len(customers) == 1
    assert BillingAccount.objects.get(organisation=org).stripe_customer_id == customers[0]["id"]
    assert second.json()["id"] != first.json()["id"]


def test_a_new_checkout_expires_the_one_left_open_so_only_one_can_be_paid(api, synced, org):
    """Two Checkouts (another tab, the back button) could both be paid: two subscriptions on the same
    meters, every call billed twice."""
    first = api.post_json("/v1/billing/checkout", {"plan": "payg"}).json()
    second = api.post_json("/v1/billing/checkout", {"plan": "payg"}).json()
    assert (synced.objects[first["id"]]["status"], synced.objects[second["id"]]["status"]) == ("expired", "open")
    with pytest.raises(Exception, match="cannot be paid"):
        synced.complete_checkout(first["id"])
    synced.complete_checkout(second["id"])
    assert len([o for o in synced.objects.values() if o["object"] == "subscription"]) == 1


def test_it_refuses_checkout_for_a_plan_that_is_not_self_serve(api, synced):
    response = api.post_json("/v1/billing/checkout", {"plan": "enterprise"})
    assert response.status_code == 409
    assert (response.json()["error"]["code"], response.json()["error"]["param"]) == ("plan_unavailable", "plan")


def test_it_answers_400_naming_the_plans_on_offer_for_a_plan_that_does_not_exist(api, synced):
    """A typo in the plan code was a 409 conflict, "not available through Checkout", with no param."""
    response = api.post_json("/v1/billing/checkout", {"plan": "pay-as-you-go"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["param"], error["message"]) == ("plan", "No plan 'pay-as-you-go'; Checkout offers: payg.")


def test_it_tells_staff_to_sync_the_catalogue_when_a_self_serve_plan_has_no_stripe_prices(api, stripe, caplog):
    response = api.post_json("/v1/billing/checkout", {"plan": "payg"})
    assert response.status_code == 409
    assert "run sync_stripe_catalog" in caplog.text


def test_it_refuses_a_second_checkout_while_the_organisation_is_subscribed(api, client, synced, org):
    """A second Checkout made a second metered subscription: every call was billed twice."""
    completed = checkout_and_subscribe(api, synced)
    post_event(client, synced, synced.event("checkout.session.completed", completed))
    sessions = len([o for o in synced.objects.values() if o["object"] == "checkout.session"])
    response = api.post_json("/v1/billing/checkout", {"plan": "payg"})
    assert response.status_code == 409, response.content
    assert response.json()["error"]["code"] == "already_subscribed"
    assert "/v1/billing/portal" in response.json()["error"]["message"]
    assert len([o for o in synced.objects.values() if o["object"] == "checkout.session"]) == sessions


def test_it_offers_checkout_again_once_the_subscription_is_cancelled(api, client, synced, org):
    subscription = checkout_and_subscribe(api, synced)["subscription"]
    deleted = synced.subscription_set(subscription, status="canceled")
    post_event(client, synced, synced.event("customer.subscription.deleted", deleted))
    assert api.post_json("/v1/billing/checkout", {"plan": "payg"}).status_code == 201


def test_it_sends_customers_back_to_pages_that_exist_when_no_urls_are_given(api, synced, settings):
    """Without success_url / cancel_url / return_url (the documented curl calls), Stripe sent the customer
    back to /billing/success, /billing/cancelled or /, all 404s."""
    from urllib.parse import urlsplit

    from django.urls import resolve

    settings.BILLING_PUBLIC_URL = "https://mm.example.com/"
    checkout = synced.objects[api.post_json("/v1/billing/checkout", {"plan": "payg"}).json()["id"]]
    api.post_json("/v1/billing/portal", {})
    portal = next(o for o in synced.objects.values() if o["object"] == "billing_portal.session")
    for url in (checkout["success_url"], checkout["cancel_url"], portal["return_url"]):
        assert url.startswith("https://mm.example.com/"), url
        assert resolve(urlsplit(url).path).url_name == "portal-billing", url
    assert urlsplit(checkout["success_url"]).query == "checkout=success"


@pytest.mark.parametrize("path", ["/v1/billing/checkout", "/v1/billing/portal"])
def test_it_makes_a_new_customer_when_stripe_no_longer_has_ours(api, synced, org, path):
    """A customer deleted in Stripe's dashboard (or made with test keys before going live) made every
    Checkout and portal session of the organisation a 502, for good."""
    payments.customer_ensure(organisation_id=org.pk)
    gone = BillingAccount.objects.get(organisation=org).stripe_customer_id
    del synced.objects[gone]
    response = api.post_json(path, {"plan": "payg"} if path.endswith("checkout") else {})
    assert response.status_code == 201, response.content
    customer = BillingAccount.objects.get(organisation=org).stripe_customer_id
    assert customer not in ("", gone) and synced.objects[customer]["metadata"]["organisation_id"] == str(org.pk)
    assert api.post_json(path, {"plan": "payg"} if path.endswith("checkout") else {}).status_code == 201
    assert BillingAccount.objects.get(organisation=org).stripe_customer_id == customer


def test_it_keeps_the_customer_of_a_subscribed_organisation_that_stripe_does_not_know(api, synced, org):
    """Only staff can tell a deleted customer from a Stripe key of the wrong account: a subscribed
    organisation's customer, which its subscription and usage point at, is never replaced."""
    gone = payments.customer_ensure(organisation_id=org.pk)
    BillingAccount.objects.filter(organisation=org).update(stripe_subscription_id="sub_x", subscription_status="active")
    del synced.objects[gone]
    assert api.post_json("/v1/billing/portal", {}).status_code == 502
    assert BillingAccount.objects.get(organisation=org).stripe_customer_id == gone


def test_it_lists_no_invoices_for_a_customer_stripe_no_longer_has(api, synced, org):
    payments.customer_ensure(organisation_id=org.pk)
    del synced.objects[BillingAccount.objects.get(organisation=org).stripe_customer_id]
    response = api.get("/v1/invoices")
    assert response.status_code == 200, response.content
    assert response.json() == {"invoices": [], "upcoming": None, "has_more": False}


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/v1/billing/checkout", "success_url"),
        ("/v1/billing/checkout", "cancel_url"),
        ("/v1/billing/portal", "return_url"),
    ],
)
def test_it_answers_400_with_the_param_when_stripe_refuses_a_return_url(api, synced, path, field):
    """A URL Stripe refuses (ftp://...) was a 502 'Stripe refused the request', logged as our error."""
    response = api.post_json(
        path,
        {"plan": "payg", field: "ftp://example.com/back"} if "checkout" in path else {field: "ftp://example.com/back"},
    )
    assert response.status_code == 400, response.content
    assert (response.json()["error"]["param"], response.json()["error"]["message"]) == (
        field,
        "Stripe: Not a valid URL",
    )


def test_it_opens_the_customer_portal(api, synced):
    response = api.post_json("/v1/billing/portal", {"return_url": "https://example.com/back"})
    assert response.status_code == 201
    assert "/p/session/" in response.json()["url"]


@pytest.mark.parametrize(
    ("method", "path"), [("post", "/v1/billing/checkout"), ("post", "/v1/billing/portal"), ("get", "/v1/invoices")]
)
def test_it_says_billing_is_not_configured_without_stripe_keys(api, method, path):
    response = api.post_json(path, {}) if method == "post" else api.get(path)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "billing_not_configured"


def test_it_estimates_charges_even_with_billing_off(api, org, iris):
    account_on(org, "payg")
    api.post_json("/v1/models/iris:predict", {"instances": [IRIS_ROW] * 4})
    body = api.get("/v1/usage?group_by=meter").json()
    line = next(li for li in body["estimate"]["lines"] if li["meter"] == "online_predictions")
    assert (line["units"], line["amount"]) == (4, "0")  # 0.2 cents: Stripe's invoice line rounds it to 0
    assert body["buckets"][-1]["meters"]["online_predictions"] == {"units": 4, "amount": "0.002"}


def test_it_lists_past_and_upcoming_invoices(api, synced, org):
    subscription = checkout_and_subscribe(api, synced)["subscription"]
    customer = BillingAccount.objects.get(organisation=org).stripe_customer_id
    synced.invoice_create(customer, subscription, status="paid", amount_due=1234, amount_paid=1234)
    body = api.get("/v1/invoices").json()
    assert body["invoices"][0]["amount_paid"] == 1234
    assert body["invoices"][0]["hosted_invoice_url"].startswith(synced.url)
    assert body["invoices"][0]["invoice_pdf"].endswith("/pdf")
    assert body["upcoming"]["status"] == "draft"


def test_it_pages_through_every_past_invoice(api, synced, org):
    """Only the 24 newest invoices were ever listed: a customer of two years could not get the older ones."""
    subscription = checkout_and_subscribe(api, synced)["subscription"]
    customer = BillingAccount.objects.get(organisation=org).stripe_customer_id
    made = [
        synced.invoice_create(customer, subscription, status="paid", created=1_700_000_000 + i)["id"] for i in range(30)
    ]
    first = api.get("/v1/invoices").json()
    assert (len(first["invoices"]), first["has_more"]) == (24, True)
    assert first["upcoming"] is not None
    rest = api.get(f"/v1/invoices?starting_after={first['invoices'][-1]['id']}").json()
    assert (len(rest["invoices"]), rest["has_more"], rest["upcoming"]) == (6, False, None)
    assert [i["id"] for i in first["invoices"] + rest["invoices"]] == made[::-1]
    small = api.get("/v1/invoices?limit=5").json()
    assert (len(small["invoices"]), small["has_more"]) == (5, True)


@pytest.mark.parametrize("query", ["limit=0", "limit=101", "limit=x", "starting_after=" + "i" * 300])
def test_it_answers_400_to_a_bad_invoice_page(api, synced, query):
    response = api.get(f"/v1/invoices?{query}")
    assert response.status_code == 400, response.content
    assert response.json()["error"]["param"] in ("limit", "starting_after")


def test_it_answers_400_when_stripe_has_no_such_invoice_to_start_after(api, synced, org):
    checkout_and_subscribe(api, synced)
    response = api.get("/v1/invoices?starting_after=in_nope")
    assert response.status_code == 400, response.content
    assert response.json()["error"]["param"] == "starting_after"


def test_it_applies_a_checkout_through_the_webhook(api, client, synced, org):
    session = api.post_json("/v1/billing/checkout", {"plan": "payg"}).json()
    completed = synced.complete_checkout(session["id"])
    response = post_event(client, synced, synced.event("checkout.session.completed", completed))
    assert response.status_code == 200, response.content
    account = BillingAccount.objects.get(organisation=org)
    assert (account.plan.code, account.status, account.subscription_status) == ("payg", "active", "active")
    assert account.metered_since is not None
    assert StripeEvent.objects.get().outcome == "subscription active"


def test_it_ignores_a_replayed_event(api, client, synced, org):
    subscription = checkout_and_subscribe(api, synced)["subscription"]
    event = synced.event("customer.subscription.updated", synced.subscription_set(subscription))
    assert post_event(client, synced, event).json()["outcome"] == "subscription active"
    synced.subscription_set(subscription, status="past_due")
    assert post_event(client, synced, event).json()["outcome"] == "duplicate"
    assert BillingAccount.objects.get(organisation=org).status == "active"
    assert StripeEvent.objects.count() == 1


def test_it_converges_whatever_the_order_of_events(api, client, synced, org):
    session = api.post_json("/v1/billing/checkout", {"plan": "payg"}).json()
    completed = synced.complete_checkout(session["id"])
    subscription = completed["subscription"]
    customer = completed["customer"]
    created = synced.event("customer.subscription.created", synced.subscription_set(subscription))
    invoice = synced.invoice_create(customer, subscription, status="open", created=int(time.time()) - 3 * 86400)
    failed = synced.event("invoice.payment_failed", invoice)
    synced.subscription_set(subscription, status="past_due")
    updated = synced.event("customer.subscription.updated", synced.subscription_set(subscription))
    checkout = synced.event("checkout.session.completed", completed)
    for event in (updated, failed, checkout, created):  # newest first, oldest last
        assert post_event(client, synced, event).status_code == 200
    account = BillingAccount.objects.get(organisation=org)
    assert (account.plan.code, account.status) == ("payg", "past_due")
    assert account.past_due_since is not None
    assert int(account.past_due_since.timestamp()) == invoice["created"]


def test_it_keeps_the_newer_subscription_whatever_the_order_of_the_old_ones_events(api, client, synced, org):
    """Moved to a new subscription in Stripe's dashboard: a late event of the old one (still active for a
    moment) made it current again, and its deletion then cancelled a paying organisation (402)."""
    old = checkout_and_subscribe(api, synced)
    post_event(client, synced, synced.event("checkout.session.completed", old))
    new = second_subscription(synced, org, customer_id=old["customer"])
    created = synced.objects[old["subscription"]]["created"] + 60
    new_created = synced.event("customer.subscription.created", synced.subscription_set(new, created=created))
    old_paid = synced.event("invoice.paid", {"id": "in_old", "subscription": old["subscription"]})
    old_deleted = synced.event(
        "customer.subscription.deleted", synced.subscription_set(old["subscription"], status="canceled")
    )
    synced.subscription_set(old["subscription"], status="active")  # what Stripe says when old_paid is handled
    assert post_event(client, synced, new_created).status_code == 200
    assert post_event(client, synced, old_paid).status_code == 200
    synced.subscription_set(old["subscription"], status="canceled")
    assert post_event(client, synced, old_deleted).status_code == 200
    account = BillingAccount.objects.get(organisation=org)
    assert (account.stripe_subscription_id, account.status) == (new, "active")
    assert api.post_json("/v1/models/iris:predict", {"instances": [IRIS_ROW]}).status_code != 402


def incomplete_checkout_events(api, stripe):
    """A Checkout whose first payment waits for 3-D Secure, and the events Stripe sends on the way."""
    completed = checkout_and_subscribe(api, stripe, status="incomplete")
    subscription, customer = completed["subscription"], completed["customer"]
    invoice = stripe.invoice_create(customer, subscription, status="open")
    events = [
        stripe.event("customer.subscription.created", stripe.subscription_set(subscription)),
        stripe.event("invoice.finalized", invoice),
        stripe.event("invoice.payment_failed", invoice),
        stripe.event("checkout.session.completed", completed),
    ]
    return subscription, events


def account_state(org):
    account = BillingAccount.objects.get(organisation=org)
    return (account.plan.code, account.status, account.metered_since, account.current_period_start)


def test_it_keeps_the_plan_it_had_while_the_first_payment_is_incomplete(api, client, synced, org, default_free_plan):
    """An incomplete subscription (its first payment not made yet, e.g. a card waiting for 3-D Secure)
    switched the organisation to the paid plan and its higher limits at once."""
    payments.account_get_or_create(organisation_id=org.pk)
    before = account_state(org)
    _, events = incomplete_checkout_events(api, synced)
    for event in events:
        assert post_event(client, synced, event).json()["outcome"] == "subscription incomplete"
    assert account_state(org) == before
    assert before[:3] == ("free", "active", None)
    assert BillingAccount.objects.get(organisation=org).subscription_status == "incomplete"
    assert limits.entitlement_get(organisation_id=org.pk).plan_code == "free"


@pytest.mark.parametrize("order", [[0, 1, 2, 3, 4, 5], [5, 4, 3, 2, 1, 0], [3, 5, 0, 4, 1, 2], [4, 0, 5, 2, 3, 1]])
def test_it_moves_to_the_paid_plan_once_the_first_payment_is_made_in_any_order(
    api, client, synced, org, default_free_plan, order
):
    subscription, events = incomplete_checkout_events(api, synced)
    events.append(synced.event("invoice.paid", events[1]["data"]["object"]))
    events.append(synced.event("customer.subscription.updated", synced.subscription_set(subscription, status="active")))
    synced.subscription_set(subscription, status="incomplete")
    for position, index in enumerate(order):
        if position == len(order) // 2:
            synced.subscription_set(subscription, status="active")  # the customer passed 3-D Secure meanwhile
        assert post_event(client, synced, events[index]).status_code == 200
    account = BillingAccount.objects.get(organisation=org)
    assert (account.plan.code, account.status, account.subscription_status) == ("payg", "active", "active")
    assert int(account.metered_since.timestamp()) == synced.objects[subscription]["created"]
    assert limits.entitlement_get(organisation_id=org.pk).plan_code == "payg"


@pytest.mark.parametrize("prior", [{}, {"status": "canceled"}])
def test_it_leaves_the_account_as_it_was_when_the_first_payment_never_comes(
    api, client, synced, org, iris, default_free_plan, prior
):
    """incomplete_expired cancelled the account: an organisation that had only tried to upgrade lost even
    its free plan (402 on every call)."""
    account_on(org, "free", **prior)
    before = account_state(org)
    subscription, events = incomplete_checkout_events(api, synced)
    for event in events[:2]:
        post_event(client, synced, event)
    synced.subscription_set(subscription, status="incomplete_expired")
    expired = synced.event("customer.subscription.updated", synced.subscription_set(subscription))
    for event in [expired, *events[2:]]:
        assert post_event(client, synced, event).json()["outcome"] == "subscription incomplete_expired"
    assert account_state(org) == before
    predicted = api.post_json("/v1/models/iris:predict", {"instances": [IRIS_ROW]})
    assert predicted.status_code == (402 if prior else 200), predicted.content
    assert api.post_json("/v1/billing/checkout", {"plan": "payg"}).status_code == 201


def test_it_keeps_a_paying_subscription_over_a_newer_one_whose_first_payment_is_pending(api, client, synced, org):
    paying = checkout_and_subscribe(api, synced)
    post_event(client, synced, synced.event("checkout.session.completed", paying))
    pending = second_subscription(synced, org, customer_id=paying["customer"], status="incomplete")
    synced.subscription_set(pending, created=synced.objects[paying["subscription"]]["created"] + 60)
    pending_created = synced.event("customer.subscription.created", synced.subscription_set(pending))
    paying_updated = synced.event("customer.subscription.updated", synced.subscription_set(paying["subscription"]))
    for event in (paying_updated, pending_created):
        post_event(client, synced, event)
    assert post_event(client, synced, paying_updated).json()["outcome"] == "duplicate"
    synced.subscription_set(pending, status="incomplete_expired")
    post_event(client, synced, synced.event("customer.subscription.updated", synced.subscription_set(pending)))
    account = BillingAccount.objects.get(organisation=org)
    assert (account.stripe_subscription_id, account.plan.code, account.status) == (
        paying["subscription"],
        "payg",
        "active",
    )
    assert account.is_subscribed


def test_it_treats_a_paused_subscription_as_past_due(api, client, synced, org):
    """A paused subscription (a trial ended without a card) bills nothing, yet the organisation kept full
    service on its paid plan, with no end."""
    completed = checkout_and_subscribe(api, synced)
    post_event(client, synced, synced.event("checkout.session.completed", completed))
    paused = synced.subscription_set(completed["subscription"], status="paused")
    assert post_event(client, synced, synced.event("customer.subscription.paused", paused)).status_code == 200
    post_event(client, synced, synced.event("customer.subscription.updated", paused))
    account = BillingAccount.objects.get(organisation=org)
    assert (account.status, account.subscription_status) == ("past_due", "paused")
    assert account.past_due_since is not None
    assert api.post_json("/v1/billing/checkout", {"plan": "payg"}).json()["error"]["code"] == "already_subscribed"


def test_it_cancels_on_subscription_deleted(api, client, synced, org, iris):
    subscription = checkout_and_subscribe(api, synced)["subscription"]
    post_event(
        client, synced, synced.event("checkout.session.completed", {"customer": "x", "subscription": subscription})
    )
    deleted = synced.event("customer.subscription.deleted", synced.subscription_set(subscription, status="canceled"))
    assert post_event(client, synced, deleted).status_code == 200
    assert BillingAccount.objects.get(organisation=org).status == "canceled"
    assert api.post_json("/v1/models/iris:predict", {"instances": [IRIS_ROW]}).status_code == 402


def test_it_rejects_a_forged_signature(client, synced):
    event = synced.event("invoice.paid", {"id": "in_x"})
    response = post_event(client, synced, event, secret="whsec_someone_else")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_signature"
    assert not StripeEvent.objects.exists()


def test_it_rejects_a_stale_signature(client, synced):
    event = synced.event("invoice.paid", {"id": "in_x"})
    response = post_event(client, synced, event, timestamp=int(time.time()) - 301)
    assert response.status_code == 400
    assert not StripeEvent.objects.exists()


def test_it_rejects_a_webhook_without_signature(client, synced):
    response = client.post("/v1/billing/webhook", data=b"{}", content_type="application/json")
    assert response.status_code == 400


def test_it_records_unhandled_event_types_as_ignored(client, synced):
    assert post_event(client, synced, synced.event("customer.created", {"id": "cus_x"})).json() == {
        "outcome": "ignored"
    }
    assert StripeEvent.objects.get().outcome == "ignored"


def test_it_asks_for_redelivery_when_stripe_cannot_be_reached(api, client, synced):
    subscription = checkout_and_subscribe(api, synced)["subscription"]
    event = synced.event("customer.subscription.updated", {"id": subscription})
    with override_settings(STRIPE_API_BASE="http://127.0.0.1:9"):
        assert post_event(client, synced, event).status_code == 502
    assert StripeEvent.objects.get().outcome == "failed"
    assert post_event(client, synced, event).json()["outcome"] == "subscription active"


def test_it_answers_a_malformed_event_400_and_processes_its_redelivery(api, client, synced, org):
    subscription = checkout_and_subscribe(api, synced)["subscription"]
    event = synced.event("customer.subscription.updated", synced.subscription_set(subscription))
    broken = {key: value for key, value in event.items() if key != "data"}
    response = post_event(client, synced, broken)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "malformed_event"
    assert StripeEvent.objects.get().outcome == "failed"
    assert post_event(client, synced, event).json()["outcome"] == "subscription active"


def test_it_keeps_an_event_open_when_its_handler_fails(api, client, synced, org):
    """Our own failure (here: this process has no Stripe key to re-fetch with) is not a duplicate later."""
    subscription = checkout_and_subscribe(api, synced)["subscription"]
    event = synced.event("customer.subscription.updated", synced.subscription_set(subscription))
    with override_settings(STRIPE_SECRET_KEY=""):  # the re-fetch cannot even be attempted: not a Stripe error
        response = post_event(client, synced, event)
    assert response.status_code >= 400
    assert StripeEvent.objects.get().outcome == "failed"
    assert post_event(client, synced, event).json()["outcome"] == "subscription active"


def test_it_answers_an_event_for_an_object_stripe_does_not_have_and_keeps_the_reason(client, synced):
    event = synced.event("customer.subscription.updated", {"id": "sub_missing"})
    response = post_event(client, synced, event)
    assert response.status_code == 200
    assert response.json() == {"outcome": "rejected"}
    row = StripeEvent.objects.get()
    assert row.outcome == "rejected" and "sub_missing" in row.detail
    assert post_event(client, synced, event).json()["outcome"] == "duplicate"


@pytest.mark.parametrize(
    ("type_", "subject"),
    [
        ("customer.subscription.updated", {"status": "active"}),
        ("customer.subscription.updated", {"id": 5}),
        ("invoice.paid", {"id": "in_x", "subscription": ["sub_x"]}),
        ("checkout.session.completed", {"id": "cs_x", "subscription": {"object": "subscription"}}),
    ],
)
def test_it_answers_an_event_whose_object_lacks_a_usable_id_400_and_keeps_it_open(client, synced, type_, subject):
    """A signed event whose object had no string id was a 500."""
    response = post_event(client, synced, synced.event(type_, subject))
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == "malformed_event"
    assert StripeEvent.objects.get().outcome == "failed"


@pytest.mark.parametrize("event_id", ["evt_" + "x" * 200, "evt_\u0000"])
def test_it_answers_an_event_id_it_cannot_store_400(client, synced, event_id):
    event = synced.event("customer.created", {"id": "cus_x"}) | {"id": event_id}
    response = post_event(client, synced, event)
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == "malformed_event"
    assert not StripeEvent.objects.exists()


def test_it_answers_a_checkout_made_outside_modelmeter_without_touching_an_account(api, client, synced, org):
    """A session of another integration on the same Stripe account (a Payment Link, a staging server) was
    a 500 redelivered for days when its client_reference_id named no organisation here, and attached its
    customer to the organisation whose id it happened to carry."""
    customer = synced.customers_create({"name": "someone else's customer"})
    # "²" passes str.isdigit() yet int() refuses it; 30 digits overflow the organisation id's column.
    for reference in ("999999", str(org.pk), "²", "9" * 30):
        session = {"id": "cs_other", "object": "checkout.session", "client_reference_id": reference}
        response = post_event(
            client, synced, synced.event("checkout.session.completed", session | {"customer": customer["id"]})
        )
        assert response.status_code == 200, response.content
        assert response.json() == {"outcome": "no_subscription"}
    assert not BillingAccount.objects.filter(stripe_customer_id=customer["id"]).exists()


def test_it_links_the_customer_of_its_own_checkout_from_the_webhook(api, client, synced, org):
    completed = checkout_and_subscribe(api, synced)
    BillingAccount.objects.filter(organisation=org).update(stripe_customer_id="")  # e.g. restored from a backup
    assert post_event(client, synced, synced.event("checkout.session.completed", completed)).status_code == 200
    assert BillingAccount.objects.get(organisation=org).stripe_customer_id == completed["customer"]


def test_it_stores_an_event_carrying_a_nul_character(client, synced):
    """PostgreSQL's jsonb cannot hold \\u0000: a customer name with one made the event a 500, redelivered for days."""
    event = synced.event("customer.updated", {"id": "cus_x", "name": "Ac\u0000me", "metadata": {"k\u0000": "v"}})
    response = post_event(client, synced, event)
    assert response.status_code == 200, response.content
    assert response.json() == {"outcome": "ignored"}
    assert StripeEvent.objects.get().payload["data"]["object"]["name"] == "Acme"


@pytest.mark.parametrize(
    "payload", [b"not json", b"[1, 2]", b'{"object": "event"}', b'{"id": "evt_x", "type": "x", "a": ' + b"[" * 100_000]
)
def test_it_tells_a_correctly_signed_body_that_is_not_an_event_from_a_bad_signature(client, synced, payload):
    """A signed body that was not a Stripe event was told its signature was missing, forged or too old."""
    response = client.post(
        "/v1/billing/webhook", data=payload, content_type="application/json", HTTP_STRIPE_SIGNATURE=synced.sign(payload)
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "malformed_event"
    assert not StripeEvent.objects.exists()


@pytest.mark.parametrize(
    ("secret_key", "webhook_secret", "warned"),
    [("sk_test_x", "", True), ("", "whsec_x", True), ("sk_test_x", "whsec_x", False), ("", "", False)],
)
def test_a_system_check_says_the_two_stripe_keys_go_together(settings, secret_key, webhook_secret, warned):
    """With only the secret key, customers paid in Checkout and stayed on their old plan (every webhook
    was a 409); with only the webhook secret, every event was a 500."""
    from django.core.checks import run_checks

    settings.STRIPE_SECRET_KEY, settings.STRIPE_WEBHOOK_SECRET = secret_key, webhook_secret
    assert ("apiservice.W003" in [message.id for message in run_checks()]) is warned

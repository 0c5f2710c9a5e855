"""Stripe-side services: catalogue sync, customers, Checkout, portal, invoices and webhooks.

Account state is never built from webhook payloads: every event that matters re-fetches the
subscription from Stripe, so any order of deliveries converges to Stripe's current state.
"""

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from apiservice.errors import APIError, InvalidInput
from apiservice.models import Organisation

from . import catalog, limits, stripe_client
from .models import BillingAccount, BillingMeter, Plan, PlanPrice, StripeEvent

logger = logging.getLogger(__name__)
LIVE_STATUSES = {"active", "trialing", "past_due", "unpaid", "incomplete"}
# The first payment was never made (`incomplete`: Stripe waits up to 23 h, e.g. for 3-D Secure) or never
# will be (`incomplete_expired`). Such a subscription grants nothing and bills nothing: the account keeps
# the plan and standing it had before the Checkout, and the subscription's plan applies once it is
# `active` or `trialing` (every later status, `past_due` included, comes after one of those).
UNPAID_STATUSES = {"incomplete", "incomplete_expired"}


class BillingNotConfigured(APIError):
    status_code = 409
    code = "billing_not_configured"

    def __init__(self) -> None:
        super().__init__("Billing is not configured on this server (no Stripe keys); usage is still recorded.")


class StripeUnavailable(APIError):
    status_code = 502
    code = "stripe_unavailable"


def _require_stripe() -> None:
    if not stripe_client.configured():
        raise BillingNotConfigured()


def _ts(value: int | None) -> datetime | None:
    return datetime.fromtimestamp(value, tz=UTC) if value else None


# --- accounts and customers -----------------------------------------------------------------------------
def account_get_or_create(*, organisation_id: int, plan_code: str | None = None) -> BillingAccount:
    """The organisation's billing account; created on `plan_code` (else the default plan) if new."""
    if plan_code is not None:
        plan = limits.plan_get(code=plan_code)
    else:
        plan, _ = limits.plan_for_organisation(organisation_id=organisation_id)
    account, _ = BillingAccount.objects.get_or_create(organisation_id=organisation_id, defaults={"plan": plan})
    return account


def customer_ensure(*, organisation_id: int, replacing: str = "") -> str:
    """The organisation's Stripe customer, created on first need (idempotency key per organisation).

    `replacing`: a customer Stripe no longer has (deleted in the dashboard, or made with test keys before
    going live); a new one takes its place, under an idempotency key of its own.
    """
    account = account_get_or_create(organisation_id=organisation_id)
    if account.stripe_customer_id and account.stripe_customer_id != replacing:
        return account.stripe_customer_id
    organisation = Organisation.objects.get(pk=organisation_id)
    key = f"mm-customer-{organisation_id}" + (f"-after-{replacing}" if replacing else "")
    customer = stripe_client.customer_create(
        name=organisation.name, organisation_id=organisation_id, idempotency_key=key
    )
    BillingAccount.objects.filter(pk=account.pk, stripe_customer_id=account.stripe_customer_id).update(
        stripe_customer_id=customer["id"]
    )
    account.refresh_from_db()
    return account.stripe_customer_id


def _customer_missing(exc: stripe_client.StripeRejected) -> bool:
    return exc.code == "resource_missing" and exc.param == "customer"


def _with_customer(*, organisation_id: int, call: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    """`call(customer_id)`; if Stripe no longer has the customer of an organisation that is not subscribed,
    once more with a new customer. (A subscribed one keeps its customer: its subscription, webhooks and
    usage point at it, and only staff can tell a deleted customer from a misconfigured Stripe key.)"""
    customer_id = customer_ensure(organisation_id=organisation_id)
    try:
        return call(customer_id)
    except stripe_client.StripeRejected as exc:
        account = BillingAccount.objects.get(organisation_id=organisation_id)
        if not _customer_missing(exc) or account.is_subscribed:
            raise
    logger.warning("stripe has no customer %s of organisation %s: making a new one", customer_id, organisation_id)
    return call(customer_ensure(organisation_id=organisation_id, replacing=customer_id))


# --- catalogue ------------------------------------------------------------------------------------------
def catalog_sync() -> list[str]:
    """Create or update meters, products and prices in Stripe (by event name / product id / lookup key)."""
    _require_stripe()
    catalog.seed(Plan, PlanPrice, BillingMeter)  # no-op unless the seeded rows were deleted
    actions = _meters_sync()
    for plan in Plan.objects.prefetch_related("prices"):
        product_id = plan.stripe_product_id or f"mm_plan_{plan.code}"
        stripe_client.product_upsert(product_id=product_id, name=f"ModelMeter {plan.name}")
        Plan.objects.filter(pk=plan.pk).update(stripe_product_id=product_id)
        for price in plan.prices.all():
            actions.append(_price_sync(plan, price, product_id))
    return actions


def _meters_sync() -> list[str]:
    existing = {m["event_name"]: m["id"] for m in stripe_client.meters_list()}
    actions = []
    for meter in BillingMeter.objects.all():
        meter_id = existing.get(meter.event_name)
        if meter_id is None:
            meter_id = stripe_client.meter_create(event_name=meter.event_name, display_name=meter.get_meter_display())[
                "id"
            ]
            actions.append(f"meter {meter.meter}: created {meter_id}")
        BillingMeter.objects.filter(pk=meter.pk).update(stripe_meter_id=meter_id)
    return actions


def _price_sync(plan: Plan, price: PlanPrice, product_id: str) -> str:
    meter_id = BillingMeter.objects.get(meter=price.meter).stripe_meter_id
    amount = format(price.unit_amount_decimal.normalize(), "f")
    current = stripe_client.price_by_lookup_key(lookup_key=price.lookup_key)
    if (
        current is not None
        and current.get("active")
        and Decimal(str(current["unit_amount_decimal"])) == price.unit_amount_decimal
        and current["recurring"]["meter"] == meter_id
        and current["currency"] == plan.currency
    ):
        PlanPrice.objects.filter(pk=price.pk).update(stripe_price_id=current["id"])
        return f"price {price.lookup_key}: unchanged"
    created = stripe_client.price_create(
        product_id=product_id,
        currency=plan.currency,
        unit_amount_decimal=amount,
        meter_id=meter_id,
        lookup_key=price.lookup_key,
    )
    if current is not None:
        stripe_client.price_deactivate(price_id=current["id"])
    PlanPrice.objects.filter(pk=price.pk).update(stripe_price_id=created["id"])
    return f"price {price.lookup_key}: created {created['id']}"


# --- Checkout, portal, invoices -------------------------------------------------------------------------
def checkout_start(*, organisation_id: int, plan_code: str, success_url: str, cancel_url: str) -> dict[str, str]:
    _require_stripe()
    account = BillingAccount.objects.filter(organisation_id=organisation_id).first()
    if account is not None and account.is_subscribed:
        raise APIError(
            "This organisation already has a subscription; change its plan, payment method or cancel it in "
            "Stripe's customer portal (POST /v1/billing/portal).",
            status_code=409,
            code="already_subscribed",
        )
    plan = Plan.objects.filter(code=plan_code).first()
    if plan is None:  # a typo is the caller's 400, not a conflict with this server's state
        offered = ", ".join(Plan.objects.filter(self_serve=True).order_by("code").values_list("code", flat=True))
        raise InvalidInput(f"No plan '{plan_code}'; Checkout offers: {offered or 'none'}.", param="plan")
    price_ids = [p.stripe_price_id for p in plan.prices.all()]
    if plan.self_serve and (not price_ids or not all(price_ids)):
        logger.error("plan %s is self-serve but has no Stripe prices: run sync_stripe_catalog", plan.code)
    if not plan.self_serve or not price_ids or not all(price_ids):
        raise APIError(
            f"Plan '{plan_code}' is not available through Checkout.",
            status_code=409,
            code="plan_unavailable",
            param="plan",
        )

    def start(customer_id: str) -> dict[str, Any]:
        _checkouts_expire(customer_id=customer_id)
        return stripe_client.checkout_session_create(
            customer_id=customer_id,
            price_ids=price_ids,
            organisation_id=organisation_id,
            success_url=success_url,
            cancel_url=cancel_url,
        )

    session = _stripe_call(_with_customer, organisation_id=organisation_id, call=start)
    return {"id": session["id"], "url": session["url"]}


def _checkouts_expire(*, customer_id: str) -> None:
    """Expire the customer's earlier Checkouts still open, so that one Checkout at most can be paid: a
    page left open (another tab, the back button, yesterday's link) and paid after a newer one made a
    second subscription, which bills every call twice. One paid meanwhile cannot be expired: Stripe
    refuses, and the webhook makes the organisation subscribed (then `already_subscribed`)."""
    for session in stripe_client.checkout_sessions_open(customer_id=customer_id):
        try:
            stripe_client.checkout_session_expire(session_id=session["id"])
        except stripe_client.StripeRejected as exc:
            logger.warning("could not expire checkout session %s: %s", session["id"], exc)


def portal_start(*, organisation_id: int, return_url: str) -> dict[str, str]:
    _require_stripe()
    session = _stripe_call(
        _with_customer,
        organisation_id=organisation_id,
        call=lambda customer_id: stripe_client.portal_session_create(customer_id=customer_id, return_url=return_url),
    )
    return {"url": session["url"]}


def _invoice_out(invoice: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": invoice.get("id"),
        "number": invoice.get("number"),
        "status": invoice.get("status"),
        "currency": invoice.get("currency"),
        "amount_due": invoice.get("amount_due"),
        "amount_paid": invoice.get("amount_paid"),
        "period_start": _ts(invoice.get("period_start")),
        "period_end": _ts(invoice.get("period_end")),
        "created": _ts(invoice.get("created")),
        "hosted_invoice_url": invoice.get("hosted_invoice_url"),
        "invoice_pdf": invoice.get("invoice_pdf"),
    }


INVOICES_PAGE = 24


def invoices_for(*, organisation_id: int, limit: int = INVOICES_PAGE, starting_after: str = "") -> dict[str, Any]:
    """A page of past invoices, newest first (`starting_after`: the last invoice id of the page before),
    and, on the first page, the upcoming one."""
    _require_stripe()
    account = BillingAccount.objects.filter(organisation_id=organisation_id).first()
    if account is None or not account.stripe_customer_id:
        return {"invoices": [], "upcoming": None, "has_more": False}
    return dict(
        _stripe_call(_invoices_of, customer_id=account.stripe_customer_id, limit=limit, starting_after=starting_after)
    )


def _invoices_of(*, customer_id: str, limit: int, starting_after: str) -> dict[str, Any]:
    try:
        past, has_more = stripe_client.invoices_list(
            customer_id=customer_id, limit=limit, starting_after=starting_after
        )
        upcoming = None if starting_after else stripe_client.invoice_upcoming(customer_id=customer_id)
    except stripe_client.StripeRejected as exc:
        if exc.code == "resource_missing" and exc.param == "starting_after":
            raise InvalidInput(
                f"No invoice '{starting_after}' of this organisation to start after.", param="starting_after"
            ) from exc
        if not _customer_missing(exc):
            raise
        return {"invoices": [], "upcoming": None, "has_more": False}  # no such customer: no invoices either
    return {
        "invoices": [_invoice_out(i) for i in past],
        "upcoming": _invoice_out(upcoming) if upcoming else None,
        "has_more": has_more,
    }


# Parameters that come from the caller as they are: Stripe refusing one is the caller's 400, not our 502.
CALLER_PARAMS = frozenset({"success_url", "cancel_url", "return_url"})


def _stripe_call(fn: Callable[..., Any], **kwargs: Any) -> Any:
    try:
        return fn(**kwargs)
    except stripe_client.StripeTransient as exc:
        logger.warning("stripe unavailable: %s", exc)
        raise StripeUnavailable("Stripe did not answer; try again shortly.") from exc
    except stripe_client.StripeRejected as exc:
        if exc.param in CALLER_PARAMS:
            raise InvalidInput(f"Stripe: {exc}", param=exc.param) from exc
        logger.error("stripe rejected a request: %s", exc)
        raise StripeUnavailable("Stripe refused the request; it has been logged.") from exc


# --- subscription state (re-fetched, so every event order converges) -------------------------------------
def _plan_of(subscription: dict[str, Any]) -> Plan | None:
    price_ids = [item["price"]["id"] for item in subscription["items"]["data"]]
    price = PlanPrice.objects.select_related("plan").filter(stripe_price_id__in=price_ids).first()
    return price.plan if price else None


def _past_due_since(subscription: dict[str, Any], account: BillingAccount) -> datetime:
    invoice_id = subscription.get("latest_invoice")
    if isinstance(invoice_id, dict):
        invoice_id = invoice_id.get("id")
    if invoice_id:
        invoice = stripe_client.invoice_retrieve(invoice_id=invoice_id)
        since = _ts(invoice.get("due_date") or invoice.get("created"))
        if since is not None:
            return since
    return account.past_due_since or timezone.now()


def _standing_rank(subscription: dict[str, Any]) -> int:
    """2: it bills (paid, trialing or dunning); 1: its first payment is pending; 0: it ended."""
    status = subscription.get("status")
    if status in BillingAccount.SUBSCRIBED_STATUSES:
        return 2
    return 1 if status in LIVE_STATUSES else 0


def _current_is_newer(account: BillingAccount, subscription: dict[str, Any]) -> bool:
    """Two live subscriptions (a move in Stripe's dashboard): one that bills beats one whose first payment
    is pending, whatever their age; between equals, the one created last is the organisation's."""
    try:
        current = stripe_client.subscription_retrieve(subscription_id=account.stripe_subscription_id)
    except stripe_client.StripeRejected as exc:
        if exc.code == "resource_missing":
            return False
        raise
    ours, theirs = _standing_rank(current), _standing_rank(subscription)
    if ours != theirs:
        return ours > theirs
    return ours > 0 and int(current.get("created") or 0) > int(subscription.get("created") or 0)


def _subscribed_fields(subscription: dict[str, Any], account: BillingAccount) -> dict[str, Any]:
    """The account's plan, period, metering and standing under a subscription whose first payment was made."""
    status = subscription["status"]
    fields: dict[str, Any] = {}
    items = subscription["items"]["data"]
    if items:
        fields["current_period_start"] = _ts(items[0].get("current_period_start"))
        fields["current_period_end"] = _ts(items[0].get("current_period_end"))
    plan = _plan_of(subscription)
    if plan is not None:
        fields["plan"] = plan
    if status in BillingAccount.SUBSCRIBED_STATUSES and account.metered_since is None:
        fields["metered_since"] = _ts(subscription.get("created")) or timezone.now()
    if status in ("active", "trialing"):
        fields.update(status=BillingAccount.Status.ACTIVE, past_due_since=None)
    elif status in ("past_due", "unpaid"):
        fields.update(status=BillingAccount.Status.PAST_DUE, past_due_since=_past_due_since(subscription, account))
    elif status == "paused":  # bills nothing until a card resumes it in the portal: past due, with the grace
        fields.update(status=BillingAccount.Status.PAST_DUE, past_due_since=account.past_due_since or timezone.now())
    elif status == "canceled":
        fields.update(status=BillingAccount.Status.CANCELED)
    return fields


def subscription_sync(*, subscription_id: str) -> str:
    subscription = stripe_client.subscription_retrieve(subscription_id=subscription_id)
    account = BillingAccount.objects.filter(stripe_customer_id=subscription["customer"]).first()
    if account is None:
        return "unknown_customer"
    status = subscription["status"]
    is_current = account.stripe_subscription_id in ("", subscription_id)
    if not is_current and status not in LIVE_STATUSES:
        return "stale_subscription"  # an old subscription ending does not touch the current one
    if not is_current and _current_is_newer(account, subscription):
        return "stale_subscription"  # a late event of a subscription the customer was moved off
    fields: dict[str, Any] = {"stripe_subscription_id": subscription_id, "subscription_status": status}
    if status not in UNPAID_STATUSES:  # else plan, period, metering and standing stay as they were
        fields.update(_subscribed_fields(subscription, account))
    for name, value in fields.items():
        setattr(account, name, value)
    account.save()
    limits.entitlement_cache.clear()
    return f"subscription {status}"


# StripeEvent.event_id and .type hold at most this many characters.
EVENT_FIELD_MAX = 100


class WebhookRejected(APIError):
    status_code = 400
    code = "invalid_signature"


def _object_id(value: Any, *, name: str, required: bool = False) -> str:
    """The id an event's object gives for `name` (a string, or an expanded object's id); "" if absent."""
    if isinstance(value, dict):  # an expanded object must carry its id
        value, required = value.get("id"), True
    if isinstance(value, str) and value:
        return value
    if value is None and not required:
        return ""
    raise WebhookRejected(f"The event's data.object has no usable '{name}'.", code="malformed_event")


def _customer_link(*, reference: Any, customer_id: str) -> None:
    """Record the Checkout's customer on the organisation it was made for, if it is ours.

    Another integration on the same Stripe account (a Payment Link, a staging server) may complete
    sessions too; only a customer we created for that organisation (its metadata says so) is linked.
    """
    # Our references are organisation ids; another integration's may be anything ("²" is isdigit() but not
    # int(), and 30 digits overflow the id column): those are not ours.
    if not (isinstance(reference, str) and reference.isascii() and reference.isdigit() and len(reference) <= 18):
        return
    if not customer_id:
        return
    if not Organisation.objects.filter(pk=int(reference)).exists():
        return
    customer = stripe_client.customer_retrieve(customer_id=customer_id)
    if str((customer.get("metadata") or {}).get("organisation_id", "")) != reference:
        return
    account = account_get_or_create(organisation_id=int(reference))
    BillingAccount.objects.filter(pk=account.pk, stripe_customer_id="").update(stripe_customer_id=customer_id)


def _on_checkout_completed(session: dict[str, Any]) -> str:
    subscription_id = _object_id(session.get("subscription"), name="subscription")
    customer_id = _object_id(session.get("customer"), name="customer")
    _customer_link(reference=session.get("client_reference_id"), customer_id=customer_id)
    if subscription_id:
        return subscription_sync(subscription_id=subscription_id)
    return "no_subscription"


def _on_subscription(subscription: dict[str, Any]) -> str:
    return subscription_sync(subscription_id=_object_id(subscription.get("id"), name="id", required=True))


def _on_invoice(invoice: dict[str, Any]) -> str:
    subscription_id = _object_id(invoice.get("subscription"), name="subscription") or _object_id(
        ((invoice.get("parent") or {}).get("subscription_details") or {}).get("subscription"), name="subscription"
    )
    if not subscription_id:
        return "no_subscription"
    return subscription_sync(subscription_id=subscription_id)


EVENT_HANDLERS: dict[str, Callable[[dict[str, Any]], str]] = {
    "checkout.session.completed": _on_checkout_completed,
    "customer.subscription.created": _on_subscription,
    "customer.subscription.updated": _on_subscription,
    "customer.subscription.deleted": _on_subscription,
    "customer.subscription.paused": _on_subscription,
    "customer.subscription.resumed": _on_subscription,
    "invoice.paid": _on_invoice,
    "invoice.payment_failed": _on_invoice,
    "invoice.finalized": _on_invoice,
}


def webhook_receive(*, payload: bytes, signature: str) -> str:
    """Verify, store once, dispatch. Returns the outcome; raises WebhookRejected / StripeUnavailable."""
    if not settings.STRIPE_WEBHOOK_SECRET:
        raise BillingNotConfigured()
    try:
        event = stripe_client.webhook_event_verify(payload=payload, signature=signature)
    except stripe_client.SignatureInvalid as exc:
        raise WebhookRejected("The Stripe-Signature header is missing, forged or too old.") from exc
    except stripe_client.EventMalformed as exc:
        raise WebhookRejected(str(exc), code="malformed_event") from exc
    if not isinstance(event.get("id"), str) or not isinstance(event.get("type"), str):
        raise WebhookRejected("The event has no 'id' or 'type'.", code="malformed_event")
    if any(len(event[k]) > EVENT_FIELD_MAX or "\x00" in event[k] for k in ("id", "type")):
        raise WebhookRejected(
            f"The event's 'id' or 'type' is over {EVENT_FIELD_MAX} characters or holds a NUL.", code="malformed_event"
        )
    row = _event_claim(event)
    if row is None:
        return "duplicate"
    handler = EVENT_HANDLERS.get(event["type"])
    data = event.get("data")
    subject = data.get("object") if isinstance(data, dict) else None
    if handler is not None and not isinstance(subject, dict):
        _event_failed(row, "no data.object")
        raise WebhookRejected("The event has no 'data.object'.", code="malformed_event")
    try:
        outcome = handler(subject) if handler is not None and subject is not None else "ignored"
    except stripe_client.StripeRejected as exc:
        if exc.code != "resource_missing":
            _event_failed(row, str(exc))
            raise StripeUnavailable("Stripe refused the re-fetch; deliver again later.") from exc
        # The object is not in this Stripe account (deleted, or another mode's): no redelivery will
        # change that, so the event is answered and kept, with the reason, for staff.
        outcome = "rejected"
        StripeEvent.objects.filter(pk=row.pk).update(detail=str(exc)[:2000])
    except stripe_client.StripeTransient as exc:
        _event_failed(row, str(exc))
        raise StripeUnavailable("Could not re-fetch state from Stripe; deliver again later.") from exc
    except WebhookRejected as exc:  # a malformed object: kept open, like an event without data.object
        _event_failed(row, exc.message)
        raise
    except Exception as exc:  # our own failure: leave the event open, so Stripe's redelivery runs it again
        _event_failed(row, repr(exc))
        raise
    StripeEvent.objects.filter(pk=row.pk).update(outcome=outcome[:32], processed_at=timezone.now())
    return outcome


def _event_failed(row: StripeEvent, detail: str) -> None:
    """Mark an event so that its next delivery is handled again (`_event_claim` takes failed rows)."""
    StripeEvent.objects.filter(pk=row.pk).update(outcome="failed", detail=detail[:2000])


def _storable(value: Any) -> Any:
    """The event as PostgreSQL's jsonb can hold it: without NUL characters (the copy is for staff only)."""
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {_storable(k): _storable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_storable(v) for v in value]
    return value


def _event_claim(event: dict[str, Any]) -> StripeEvent | None:
    """Insert the event id (unique); a failed earlier attempt may be claimed again, a handled one not."""
    try:
        with transaction.atomic():
            return StripeEvent.objects.create(event_id=event["id"], type=event["type"], payload=_storable(event))
    except IntegrityError:
        taken = StripeEvent.objects.filter(event_id=event["id"], outcome="failed").update(outcome="")
        return StripeEvent.objects.get(event_id=event["id"]) if taken else None

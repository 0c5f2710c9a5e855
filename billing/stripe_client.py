"""The one seam to Stripe: the only module that imports `stripe`.

Everything goes through `StripeClient` with the API version pinned here and `api_base` from
`STRIPE_API_BASE` (tests point it at a local Stripe-compatible server). Callers get plain dicts and
two exception types: `StripeTransient` (retry later) and `StripeRejected` (a 4xx; don't).
"""

from typing import Any

import stripe
from django.conf import settings

API_VERSION = "2026-10-28.endive"


class NotConfigured(Exception):
    """No STRIPE_SECRET_KEY: billing runs without Stripe (estimates only)."""


class StripeTransient(Exception):
    """Network trouble, 429 or 5xx, or our own key refused (401/403: a revoked, rotated or restricted key,
    which configuration fixes, not the request): safe to retry with the same idempotency key.
    `maybe_done`: the request may have been carried out all the same (a lost connection or answer, a
    5xx); False when Stripe refused it outright (429, 401, 403)."""

    def __init__(self, message: str, *, maybe_done: bool = True) -> None:
        super().__init__(message)
        self.maybe_done = maybe_done


class StripeRejected(Exception):
    def __init__(self, message: str, *, code: str = "", param: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.param = param


class SignatureInvalid(Exception):
    pass


class EventMalformed(Exception):
    """Correctly signed, but not a Stripe event (not JSON, not an object with `id` and `type`)."""


def configured() -> bool:
    return bool(settings.STRIPE_SECRET_KEY)


def _client() -> stripe.StripeClient:
    if not configured():
        raise NotConfigured("Stripe is not configured (STRIPE_SECRET_KEY is empty).")
    return stripe.StripeClient(
        settings.STRIPE_SECRET_KEY,
        stripe_version=API_VERSION,
        base_addresses={"api": settings.STRIPE_API_BASE},
        max_network_retries=settings.STRIPE_MAX_NETWORK_RETRIES,
    )


def _plain(obj: Any) -> Any:
    return obj.to_dict(recursive=True) if hasattr(obj, "to_dict") else obj


def _call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return _plain(fn(*args, **kwargs))
    except stripe.APIConnectionError as exc:
        raise StripeTransient(str(exc.user_message or exc)) from exc
    except (stripe.RateLimitError, stripe.AuthenticationError, stripe.PermissionError) as exc:
        raise StripeTransient(str(exc.user_message or exc), maybe_done=False) from exc
    except stripe.StripeError as exc:
        status = exc.http_status or 0
        if status >= 500 or status == 0:
            raise StripeTransient(str(exc.user_message or exc)) from exc
        error = exc.error
        raise StripeRejected(
            str(exc.user_message or exc),
            code=str(getattr(error, "code", "") or ""),
            param=str(getattr(error, "param", "") or ""),
        ) from exc


def _options(idempotency_key: str | None) -> dict[str, Any]:
    return {"idempotency_key": idempotency_key} if idempotency_key else {}


# --- catalogue ----------------------------------------------------------------------------------------
def meters_list() -> list[dict[str, Any]]:
    return list(_call(_client().v1.billing.meters.list, params={"limit": 100})["data"])


def meter_create(*, event_name: str, display_name: str) -> dict[str, Any]:
    params = {
        "display_name": display_name,
        "event_name": event_name,
        "default_aggregation": {"formula": "sum"},
        "customer_mapping": {"type": "by_id", "event_payload_key": "stripe_customer_id"},
        "value_settings": {"event_payload_key": "value"},
    }
    return dict(_call(_client().v1.billing.meters.create, params=params))


def product_retrieve(*, product_id: str) -> dict[str, Any] | None:
    try:
        return dict(_call(_client().v1.products.retrieve, product_id))
    except StripeRejected as exc:
        if exc.code == "resource_missing":
            return None
        raise


def product_upsert(*, product_id: str, name: str) -> dict[str, Any]:
    if product_retrieve(product_id=product_id) is None:
        return dict(_call(_client().v1.products.create, params={"id": product_id, "name": name}))
    return dict(_call(_client().v1.products.update, product_id, params={"name": name}))


def price_by_lookup_key(*, lookup_key: str) -> dict[str, Any] | None:
    data = _call(_client().v1.prices.list, params={"lookup_keys": [lookup_key], "limit": 1})["data"]
    return dict(data[0]) if data else None


def price_create(
    *, product_id: str, currency: str, unit_amount_decimal: str, meter_id: str, lookup_key: str
) -> dict[str, Any]:
    params = {
        "product": product_id,
        "currency": currency,
        "unit_amount_decimal": unit_amount_decimal,
        "recurring": {"interval": "month", "usage_type": "metered", "meter": meter_id},
        "lookup_key": lookup_key,
        "transfer_lookup_key": True,
    }
    return dict(_call(_client().v1.prices.create, params=params))


def price_deactivate(*, price_id: str) -> None:
    _call(_client().v1.prices.update, price_id, params={"active": False})


# --- customers, checkout, portal, subscriptions, invoices ----------------------------------------------
def customer_create(*, name: str, organisation_id: int, idempotency_key: str) -> dict[str, Any]:
    params = {"name": name, "metadata": {"organisation_id": str(organisation_id)}}
    return dict(_call(_client().v1.customers.create, params=params, options=_options(idempotency_key)))


def customer_retrieve(*, customer_id: str) -> dict[str, Any]:
    return dict(_call(_client().v1.customers.retrieve, customer_id))


def checkout_session_create(
    *, customer_id: str, price_ids: list[str], organisation_id: int, success_url: str, cancel_url: str
) -> dict[str, Any]:
    params = {
        "mode": "subscription",
        "customer": customer_id,
        "line_items": [{"price": price_id} for price_id in price_ids],
        "client_reference_id": str(organisation_id),
        "subscription_data": {"metadata": {"organisation_id": str(organisation_id)}},
        "success_url": success_url,
        "cancel_url": cancel_url,
    }
    return dict(_call(_client().v1.checkout.sessions.create, params=params))


def checkout_sessions_open(*, customer_id: str) -> list[dict[str, Any]]:
    """The customer's Checkout Sessions that can still be paid (open ones live at most 24 h)."""
    params = {"customer": customer_id, "status": "open", "limit": 100}
    return list(_call(_client().v1.checkout.sessions.list, params=params)["data"])


def checkout_session_expire(*, session_id: str) -> None:
    _call(_client().v1.checkout.sessions.expire, session_id)


def portal_session_create(*, customer_id: str, return_url: str) -> dict[str, Any]:
    params = {"customer": customer_id, "return_url": return_url}
    return dict(_call(_client().v1.billing_portal.sessions.create, params=params))


def subscription_retrieve(*, subscription_id: str) -> dict[str, Any]:
    return dict(_call(_client().v1.subscriptions.retrieve, subscription_id))


def invoice_retrieve(*, invoice_id: str) -> dict[str, Any]:
    return dict(_call(_client().v1.invoices.retrieve, invoice_id))


def invoices_list(*, customer_id: str, limit: int, starting_after: str = "") -> tuple[list[dict[str, Any]], bool]:
    """A page of the customer's invoices, newest first, and whether older ones follow."""
    params: dict[str, Any] = {"customer": customer_id, "limit": limit}
    if starting_after:
        params["starting_after"] = starting_after
    page = _call(_client().v1.invoices.list, params=params)
    return list(page["data"]), bool(page.get("has_more"))


def invoice_upcoming(*, customer_id: str) -> dict[str, Any] | None:
    try:
        return dict(_call(_client().v1.invoices.create_preview, params={"customer": customer_id}))
    except StripeRejected as exc:
        if exc.code == "invoice_upcoming_none":
            return None
        raise


# --- metering -----------------------------------------------------------------------------------------
def meter_event_create(
    *, event_name: str, customer_id: str, value: int, identifier: str, timestamp: int, idempotency_key: str = ""
) -> str:
    """Send one meter event. Returns "created" or "duplicate" (Stripe already has this identifier).

    The idempotency key is the identifier unless given: Stripe replays a key's first answer (errors
    included) for 24 hours, so a resend after a refusal needs a key of its own."""
    params = {
        "event_name": event_name,
        "payload": {"stripe_customer_id": customer_id, "value": str(value)},
        "identifier": identifier,
        "timestamp": timestamp,
    }
    try:
        _call(_client().v1.billing.meter_events.create, params=params, options=_options(idempotency_key or identifier))
    except StripeRejected as exc:
        if exc.param == "identifier" and exc.code == "resource_already_exists":
            return "duplicate"
        raise
    return "created"


def meter_event_summaries(*, meter_id: str, customer_id: str, start: int, end: int) -> list[dict[str, Any]]:
    """Every daily summary in [start, end): Stripe pages them (10 a page unless asked), so follow the pages."""
    params: dict[str, Any] = {
        "customer": customer_id,
        "start_time": start,
        "end_time": end,
        "value_grouping_window": "day",
        "limit": 100,
    }
    summaries: list[dict[str, Any]] = []
    while True:
        page = _call(_client().v1.billing.meters.event_summaries.list, meter_id, params=params)
        summaries += page["data"]
        if not page.get("has_more") or not page["data"]:
            return summaries
        params["starting_after"] = page["data"][-1]["id"]


# --- webhooks -----------------------------------------------------------------------------------------
def webhook_event_verify(*, payload: bytes, signature: str, tolerance: int = 300) -> dict[str, Any]:
    """Check `Stripe-Signature` against STRIPE_WEBHOOK_SECRET; returns the event as a dict."""
    if not settings.STRIPE_WEBHOOK_SECRET:
        raise NotConfigured("STRIPE_WEBHOOK_SECRET is empty.")
    try:
        stripe.WebhookSignature.verify_header(
            payload.decode("utf-8"), signature, settings.STRIPE_WEBHOOK_SECRET, tolerance
        )
    except (stripe.SignatureVerificationError, UnicodeDecodeError) as exc:
        raise SignatureInvalid(str(exc)) from exc
    import json

    try:
        event = json.loads(payload)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested deeper than Python's parser goes
        raise EventMalformed("The body is not JSON we can read.") from exc
    if not isinstance(event, dict) or "id" not in event or "type" not in event:
        raise EventMalformed("The body is not an event (an object with 'id' and 'type').")
    return event

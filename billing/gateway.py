"""Billing's two hooks in `APIGatewayMiddleware`: `admit` before the view runs, `settle` after.

admit: rate limit (every authenticated call) -> for billable POSTs: account standing (402),
Idempotency-Key (replay / 409 / 422), quota and key budget (429). Any refusal is answered here and
the model never runs. settle: rate-limit headers, the idempotent answer (which the ledger row's
statement stores), the quota reservation turned into the real units; lost: the rare call whose
Idempotency-Key another execution recorded first. With `METERING_ENABLED` off all are no-ops (the
ledger still records).
"""

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from apiservice.errors import APIError, error_response, exception_response
from apiservice.middleware import usage_of

from . import idempotency, limits
from .models import Meter


class QuotaExceeded(APIError):
    status_code = 429
    code = "quota_exceeded"


def quota_exceeded(refused: limits.QuotaRefused) -> QuotaExceeded:
    """The 429 for a refused quota or budget hold, with Retry-After: the seconds until the month resets."""
    return QuotaExceeded(
        refused.message, code=refused.code, headers={"Retry-After": str(limits.seconds_to_next_month())}
    )


@dataclass
class BillingContext:
    rate: limits.RateState | None = None
    claim: idempotency.Claim | None = None
    reservation: limits.Reservation | None = None

    def hold(self, units: int) -> None:
        """The call's real size, once the view has read its body: hold all of it, or refuse (429)
        before the model runs. One row, the usual call, is already held by the admission."""
        if self.reservation is None or units <= self.reservation.units:
            return
        try:
            limits.quota_extend(reservation=self.reservation, units=units)
        except limits.QuotaRefused as refused:
            raise quota_exceeded(refused) from None


# The scope a key needs for the calls billed on each meter: a key without it is refused by the endpoint,
# so it must never reach an Idempotency-Key replay (which would hand it another key's answer).
METER_SCOPES: dict[str, str] = {
    Meter.ONLINE_PREDICTIONS: "predict",
    Meter.BATCH_ROWS: "batch",
    Meter.BUNDLE_DOWNLOADS: "bundles",
}


@lru_cache(maxsize=1)
def _billable_posts() -> list[tuple[re.Pattern[str], str]]:
    return [(re.compile(pattern), meter) for pattern, meter in settings.BILLING_METERED_POSTS]


def meter_of(request: HttpRequest) -> str | None:
    """The meter a POST is billed on, from `BILLING_METERED_POSTS`; None for non-billable calls."""
    if request.method != "POST":
        return None
    for pattern, meter in _billable_posts():
        if pattern.search(request.path):
            return meter
    return None


def admit(request: HttpRequest) -> HttpResponse | None:
    """Refuse the call now (429/402/409/422/replay) or return None to let the view run."""
    principal = getattr(request, "principal", None)
    if principal is None or not settings.METERING_ENABLED:
        return None
    context = BillingContext()
    request.billing = context  # type: ignore[attr-defined]
    entitlement = limits.entitlement_get(organisation_id=principal.organisation_id)
    key_terms = limits.key_terms_get(api_key_id=principal.api_key_id)
    item = key_terms.rate_limit or entitlement.rate_limit
    meter = meter_of(request)
    if meter is not None and not principal.has_scope(METER_SCOPES[meter]):
        meter = None  # the endpoint refuses this key (403): nothing to bill, claim or replay to it
    billable = meter is not None and not entitlement.blocked
    asked = idempotency.idempotency_request(request, organisation_id=principal.organisation_id) if billable else None
    claim = asked if isinstance(asked, idempotency.Claim) else None
    context.rate, quota, claimed = limits.admission(
        api_key_id=principal.api_key_id,
        item=item,
        organisation_id=principal.organisation_id,
        meter=meter if billable else None,
        entitlement=entitlement,
        key_terms=key_terms,
        claim=(claim.redis_key, claim.marker, idempotency.claim_seconds()) if claim is not None else None,
    )
    if context.rate.exceeded:
        return error_response(
            request,
            status=429,
            code="rate_limited",
            message=f"Rate limit of {item.amount} requests per {context.rate.window} s exceeded.",
            headers={"Retry-After": str(context.rate.reset)},
        )
    if meter is None:
        return None
    if entitlement.blocked:
        return exception_response(request, payment_required(entitlement.blocked))
    context.reservation = quota if isinstance(quota, limits.Reservation) else None
    usage_of(request).hold = context.hold
    if isinstance(asked, HttpResponse):  # a malformed Idempotency-Key: 400
        _release(context)
        return asked
    if claim is not None:
        begun: idempotency.Claim | HttpResponse = claim
        if isinstance(claimed, bytes):  # someone holds the key; the script reserved nothing
            begun = idempotency.idempotency_taken(request, claim, marker=claimed)
            if isinstance(begun, idempotency.Claim):  # a crashed worker's claim, taken over
                quota = _reserve(principal, meter, entitlement)
                context.reservation = quota if isinstance(quota, limits.Reservation) else None
        elif claimed is None:  # Redis unavailable
            begun = idempotency.idempotency_begin_database(request, claim)
        if isinstance(begun, HttpResponse):  # replay / 409 / 422: the view won't run, give the unit back
            usage_of(request).face = "idempotent-replay" if begun.has_header("Idempotent-Replayed") else "refused"
            _release(context)
            return begun
        context.claim = begun
    if isinstance(quota, limits.QuotaRefused):
        _release(context)
        return exception_response(request, quota_exceeded(quota))
    return None


def payment_required_message(blocked: str) -> str:
    """Why a billable call is refused with 402, for an account whose standing blocks it."""
    if blocked == "canceled":  # Stripe's customer portal cannot revive it: a new Checkout can
        return "Your subscription is cancelled; subscribe again at POST /v1/billing/checkout."
    return "Your subscription is past due beyond the grace period; update billing at POST /v1/billing/portal."


def payment_required(blocked: str) -> APIError:
    """The 402 for billable work (a call, a batch, a download) of an account whose standing blocks it."""
    return APIError(payment_required_message(blocked), code="payment_required", status_code=402)


def _reserve(principal: Any, meter: str, entitlement: limits.Entitlement) -> "limits.Reservation | limits.QuotaRefused":
    try:
        return limits.quota_reserve(
            organisation_id=principal.organisation_id,
            api_key_id=principal.api_key_id,
            meter=meter,
            entitlement=entitlement,
        )
    except limits.QuotaRefused as refused:
        return refused


def _release(context: BillingContext) -> None:
    if context.reservation is not None:
        limits.quota_settle(reservation=context.reservation, units=0)
        context.reservation = None
    if context.claim is not None:
        idempotency.idempotency_release(context.claim)
        context.claim = None


def settle(request: HttpRequest, response: HttpResponse) -> HttpResponse:
    """After the view: the idempotent answer (stored with the ledger row), the quota settled to the
    real units, the rate-limit headers."""
    context: BillingContext | None = getattr(request, "billing", None)
    if context is None:
        return response
    usage = usage_of(request)
    if context.claim is not None:
        usage.answer = idempotency.idempotency_answer(context.claim, response)
    if context.reservation is not None:
        units = usage.units if response.status_code < 400 else 0
        limits.quota_settle(reservation=context.reservation, units=units)
        context.reservation.units = units
    return _with_rate_headers(context, response)


def lost(request: HttpRequest) -> HttpResponse:
    """The ledger says another execution of this Idempotency-Key was recorded first (Redis had lost
    the claim): give back the units and answer as that execution did."""
    context: BillingContext = request.billing  # type: ignore[attr-defined]
    assert context.claim is not None
    if context.reservation is not None:
        limits.quota_settle(reservation=context.reservation, units=0)
    response = idempotency.idempotency_lost(request, context.claim)
    return _with_rate_headers(context, response)


def _with_rate_headers(context: BillingContext, response: HttpResponse) -> HttpResponse:
    if context.rate is not None:
        for name, value in context.rate.headers().items():
            response[name] = value
    return response

"""Billing's two hooks in `APIGatewayMiddleware`: `admit` before the view runs, `settle` after.

admit: rate limit (every authenticated call) -> for billable POSTs: account standing (402),
Idempotency-Key (replay / 409 / 422), quota and key budget (429). Any refusal is answered here and
the model never runs. settle: rate-limit headers, the idempotency record, the quota reservation
turned into the real units. With `METERING_ENABLED` off both are no-ops (the ledger still records).
"""

import re
from dataclasses import dataclass
from functools import lru_cache

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from apiservice.errors import error_response
from apiservice.middleware import usage_of

from . import idempotency, limits


@dataclass
class BillingContext:
    rate: limits.RateState | None = None
    claim: idempotency.Claim | None = None
    reservation: limits.Reservation | None = None


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
    item = limits.key_terms_get(api_key_id=principal.api_key_id).rate_limit or entitlement.rate_limit
    context.rate = limits.rate_limit_hit(api_key_id=principal.api_key_id, item=item)
    if context.rate.exceeded:
        return error_response(
            request,
            status=429,
            code="rate_limited",
            message=f"Rate limit of {item.amount} requests per {context.rate.window} s exceeded.",
            headers={"Retry-After": str(context.rate.reset)},
        )
    meter = meter_of(request)
    if meter is None:
        return None
    return _admit_billable(request, context, principal.organisation_id, principal.api_key_id, meter, entitlement)


def _admit_billable(
    request: HttpRequest,
    context: BillingContext,
    organisation_id: int,
    api_key_id: str,
    meter: str,
    entitlement: limits.Entitlement,
) -> HttpResponse | None:
    if entitlement.blocked:
        reason = "is cancelled" if entitlement.blocked == "canceled" else "is past due beyond the grace period"
        return error_response(
            request,
            status=402,
            code="payment_required",
            message=f"Your subscription {reason}; update billing at POST /v1/billing/portal.",
        )
    begun = idempotency.idempotency_begin(request, organisation_id=organisation_id)
    if isinstance(begun, HttpResponse):
        usage_of(request).face = "idempotent-replay" if begun.has_header("Idempotent-Replayed") else "refused"
        return begun
    context.claim = begun
    try:
        context.reservation = limits.quota_reserve(
            organisation_id=organisation_id, api_key_id=api_key_id, meter=meter, entitlement=entitlement
        )
    except limits.QuotaRefused as refused:
        if context.claim is not None:
            idempotency.idempotency_release(context.claim)
            context.claim = None
        return error_response(
            request, status=429, code=refused.code, message=refused.message, headers={"Retry-After": str(limits.seconds_to_next_month())}
        )
    return None


def settle(request: HttpRequest, response: HttpResponse) -> HttpResponse:
    """After the view: store the idempotent answer, settle the quota, add rate-limit headers."""
    context: BillingContext | None = getattr(request, "billing", None)
    if context is None:
        return response
    usage = usage_of(request)
    if context.claim is not None:
        response, billed = idempotency.idempotency_finish(request, context.claim, response)
        if not billed:  # another execution of the same key was recorded first
            usage.units, usage.meter, usage.face = 0, "", "idempotent-replay"
    if context.reservation is not None:
        units = usage.units if response.status_code < 400 else 0
        limits.quota_settle(reservation=context.reservation, units=units)
    if context.rate is not None:
        for name, value in context.rate.headers().items():
            response[name] = value
    return response

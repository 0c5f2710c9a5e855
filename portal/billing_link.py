"""The portal's glue to the billing app: the sign-up plan, per-key budgets and the revenue estimate.

Billing owns plans, prices and accounts; the portal only calls its services and reads its rows.
"""

from collections import defaultdict
from decimal import Decimal
from typing import Any

from django.apps import apps
from django.conf import settings

from apiservice.models import APIKey, Organisation

# The largest monthly budget a key can have: stored as a bigint, and compared in Redis' Lua scripts,
# whose numbers are doubles (exact only below 2**53). A quadrillion units is no limit in practice.
MAX_MONTHLY_BUDGET_UNITS = 10**15


def budgets_supported() -> bool:
    """Per-key monthly budgets: a field on APIKey, or billing's KeyLimit rows."""
    if any(f.name == "monthly_budget_units" for f in APIKey._meta.get_fields()):
        return True
    if not apps.is_installed("billing"):
        return False
    return any(m.__name__ == "KeyLimit" for m in apps.get_app_config("billing").get_models())


def signup_free_plan(*, organisation: Organisation) -> None:
    """PORTAL_SIGNUP_HOOKS entry: a billing account on the `free` plan for a new organisation."""
    from billing import payments

    payments.account_get_or_create(organisation_id=organisation.pk, plan_code="free")


def api_key_budget_set(*, api_key: APIKey, monthly_budget_units: int | None) -> None:
    """Store the key's monthly budget where billing reads it (billing.KeyLimit)."""
    from billing import limits
    from billing.models import KeyLimit

    KeyLimit.objects.update_or_create(api_key=api_key, defaults={"monthly_budget_units": monthly_budget_units})
    limits.entitlement_cache.clear()


def api_key_budgets(*, api_key_ids: list[str]) -> dict[str, int]:
    from billing.models import KeyLimit

    rows = KeyLimit.objects.filter(api_key_id__in=api_key_ids, monthly_budget_units__isnull=False)
    return {str(k): int(v or 0) for k, v in rows.values_list("api_key_id", "monthly_budget_units")}


def revenue_estimate(*, units_by_org_meter: dict[tuple[int, str], int]) -> list[dict[str, Any]]:
    """Units times each organisation's plan list price per meter (included allowances not deducted): one
    estimate per currency the plans bill in (adding yen to dollars, all labelled USD, read 100x off)."""
    from billing import money
    from billing.models import BillingAccount, Plan, PlanPrice

    org_ids = {org for org, _ in units_by_org_meter}
    plan_of = dict(BillingAccount.objects.filter(organisation_id__in=org_ids).values_list("organisation_id", "plan_id"))
    currency_of: dict[int | None, str] = dict(Plan.objects.values_list("pk", "currency"))
    default_plan = Plan.objects.filter(code=settings.BILLING_DEFAULT_PLAN).values_list("pk", flat=True).first()
    prices: dict[tuple[int | None, str], Decimal] = {
        (p.plan_id, p.meter): p.unit_amount_decimal for p in PlanPrice.objects.all()
    }
    minor: dict[str, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))  # currency -> meter -> amount
    for (org, meter), units in units_by_org_meter.items():
        plan = plan_of.get(org, default_plan)
        minor[currency_of.get(plan, "usd")][meter] += units * prices.get((plan, meter), Decimal(0))
    if not minor:
        minor[currency_of.get(default_plan, "usd")] = defaultdict(Decimal)

    def major(amount: Decimal, currency: str) -> Decimal:
        return money.to_major(amount, currency).quantize(1 / money.minor_per_major(currency))

    return [
        {
            "currency": currency,
            "total": major(sum(meters.values(), Decimal(0)), currency),
            "per_meter": {m: major(v, currency) for m, v in sorted(meters.items()) if v},
        }
        for currency, meters in sorted(minor.items())
    ]

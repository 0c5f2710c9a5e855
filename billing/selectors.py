"""Reads from the usage ledger: summaries with costs at the plan's prices, estimates and exports."""

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from django.db.models import Count, F, Q, QuerySet, Sum
from django.db.models.functions import TruncDay, TruncHour

from . import limits, money
from .models import UsageRecord

GROUPINGS = ("day", "hour", "meter", "model", "key")
EXPORT_FIELDS = [
    "request_id",
    "created_at",
    "face",
    "meter",
    "units",
    "status_code",
    "model",
    "model_version",
    "api_key",
    "report_id",
    "client_request_id",
]


def _amount(units: int, minor_per_unit: Decimal, currency: str) -> Decimal:
    """`units` at a price in minor units (cents; yen for jpy) per unit, in the currency's major units."""
    return money.to_major(units * minor_per_unit, currency)


def _money(value: Decimal) -> str:
    return format(value.quantize(Decimal("0.000001")).normalize(), "f")


def _grouped(rows: QuerySet[UsageRecord], group_by: str) -> QuerySet[Any]:
    if group_by == "day":
        return rows.annotate(bucket=TruncDay("created_at")).values("bucket", "meter")
    if group_by == "hour":
        return rows.annotate(bucket=TruncHour("created_at")).values("bucket", "meter")
    if group_by == "meter":
        return rows.values("meter")
    if group_by == "model":
        return rows.annotate(model=F("model_version__model__name"), version=F("model_version__number")).values(
            "model", "version", "meter"
        )
    return rows.annotate(key=F("api_key__prefix")).values("key", "meter")


# Buckets in time or name order: the label's fields first (ordering by the meter alone put every bucket
# with an unbilled call, meter "", before the rest).
_BUCKET_ORDER: dict[str, tuple[str, ...]] = {
    "day": ("bucket",),
    "hour": ("bucket",),
    "model": ("model", "version"),
    "key": ("key",),
    "meter": (),
}


def _bucket_label(item: dict[str, Any], group_by: str) -> dict[str, Any]:
    if group_by == "day":
        return {"bucket": item["bucket"].date().isoformat()}
    if group_by == "hour":
        return {"bucket": item["bucket"].isoformat()}
    if group_by == "model":
        return {"model": item["model"], "version": item["version"]}
    if group_by == "key":
        return {"key": item["key"]}
    return {"meter": item["meter"]}


def usage_summary(*, organisation_id: int, start: datetime, end: datetime, group_by: str) -> dict[str, Any]:
    """Calls, units, errors and amounts (at the plan's list prices) in [start, end), per bucket and meter."""
    entitlement = limits.entitlement_get(organisation_id=organisation_id)
    rows = UsageRecord.objects.filter(organisation_id=organisation_id, created_at__gte=start, created_at__lt=end)
    aggregates = _grouped(rows, group_by).annotate(
        calls=Count("id"), units=Sum("units"), errors=Count("id", filter=Q(status_code__gte=400))
    )
    buckets: dict[tuple[Any, ...], dict[str, Any]] = {}
    order = [F(name).asc(nulls_last=True) for name in (*_BUCKET_ORDER[group_by], "meter")]  # calls of no model last
    for item in aggregates.order_by(*order):
        label = _bucket_label(item, group_by)
        bucket = buckets.setdefault(
            tuple(label.values()), {**label, "calls": 0, "units": 0, "errors": 0, "amount": Decimal(0), "meters": {}}
        )
        units = int(item["units"] or 0)
        amount = _amount(units, entitlement.prices.get(item["meter"], Decimal(0)), entitlement.currency)
        bucket["calls"] += item["calls"]
        bucket["errors"] += item["errors"]
        bucket["units"] += units
        bucket["amount"] += amount
        if item["meter"]:
            bucket["meters"][item["meter"]] = {"units": units, "amount": _money(amount)}
    out = []
    for bucket in buckets.values():
        bucket["amount"] = _money(bucket["amount"])
        out.append(bucket)
    totals = rows.aggregate(calls=Count("id"), units=Sum("units"), errors=Count("id", filter=Q(status_code__gte=400)))
    totals["units"] = totals["units"] or 0
    totals["amount"] = _money(sum((Decimal(b["amount"]) for b in out), Decimal(0)))
    return {
        "start": start,
        "end": end,
        "group_by": group_by,
        "plan": entitlement.plan_code,
        "totals": totals,
        "buckets": out,
        "estimate": usage_estimate(organisation_id=organisation_id),
    }


def usage_estimate(*, organisation_id: int) -> dict[str, Any]:
    """Estimated charges for the current period (Stripe's if subscribed, else the calendar month), each
    meter's line rounded as Stripe rounds the invoice's lines, so the total is what it would invoice."""
    plan, account = limits.plan_for_organisation(organisation_id=organisation_id)
    start = limits.month_start()
    if account is not None and account.current_period_start is not None:
        start = account.current_period_start
    used = dict(
        UsageRecord.objects.filter(organisation_id=organisation_id, created_at__gte=start, units__gt=0)
        .exclude(meter="")
        .values_list("meter")
        .annotate(units=Sum("units"))
    )
    lines, total = [], Decimal(0)
    for price in plan.prices.order_by("meter"):
        units = int(used.get(price.meter, 0))
        billable = max(0, units - (price.included_units or 0))
        # As Stripe's invoice line for this price: rounded once to the minor unit (the usage buckets above
        # are the ledger's exact list-price value and are not rounded).
        amount = money.to_major(money.invoice_line_minor(billable, price.unit_amount_decimal), plan.currency)
        total += amount
        lines.append(
            {
                "meter": price.meter,
                "units": units,
                "included_units": price.included_units,
                "billable_units": billable,
                "unit_price": _money(money.to_major(price.unit_amount_decimal, plan.currency)),
                "amount": _money(amount),
            }
        )
    return {"period_start": start, "currency": plan.currency, "plan": plan.code, "lines": lines, "total": _money(total)}


def usage_export_rows(*, organisation_id: int, start: datetime, end: datetime) -> Iterator[dict[str, Any]]:
    """The ledger rows behind a period, oldest first, streamed from the database."""
    rows = (
        UsageRecord.objects.filter(organisation_id=organisation_id, created_at__gte=start, created_at__lt=end)
        .order_by("created_at", "id")
        .values_list(
            "request_id",
            "created_at",
            "face",
            "meter",
            "units",
            "status_code",
            "model_version__model__name",
            "model_version__number",
            "api_key__prefix",
            "report_id",
            "client_request_id",
        )
    )
    for values in rows.iterator(chunk_size=2000):
        row: dict[str, Any] = dict(zip(EXPORT_FIELDS, values, strict=True))
        row["created_at"] = values[1].astimezone(UTC).isoformat()
        yield row

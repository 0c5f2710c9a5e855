"""Reads from the usage ledger."""

from datetime import datetime
from typing import Any

from django.db.models import Count, F, Q, Sum
from django.db.models.functions import TruncDay

from .models import UsageRecord

GROUPINGS = ("day", "model", "key")


def usage_summary(*, organisation_id: int, start: datetime, end: datetime, group_by: str) -> dict[str, Any]:
    """Calls, billable units and errors in [start, end), grouped by day, model version or key."""
    rows = UsageRecord.objects.filter(organisation_id=organisation_id, created_at__gte=start, created_at__lt=end)
    grouped: Any
    if group_by == "day":
        grouped = rows.annotate(bucket=TruncDay("created_at")).values("bucket")
    elif group_by == "model":
        grouped = rows.annotate(model=F("model_version__model__name"), version=F("model_version__number")).values(
            "model", "version"
        )
    else:
        grouped = rows.annotate(key=F("api_key__prefix")).values("key")
    aggregates = grouped.annotate(
        calls=Count("id"),
        units=Sum("units"),
        errors=Count("id", filter=Q(status_code__gte=400)),
    ).order_by(*grouped.query.values_select)
    buckets = []
    for item in aggregates:
        if group_by == "day":
            item["bucket"] = item["bucket"].date().isoformat()
        item["units"] = item["units"] or 0
        buckets.append(item)
    totals = rows.aggregate(calls=Count("id"), units=Sum("units"), errors=Count("id", filter=Q(status_code__gte=400)))
    totals["units"] = totals["units"] or 0
    return {"start": start, "end": end, "group_by": group_by, "totals": totals, "buckets": buckets}

"""Reads behind the portal and staff pages: memberships, keys, and usage from rollup + ledger."""

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

from django.db.models import QuerySet
from django.utils import timezone

from apiservice.models import APIKey, Membership, Organisation
from billing.models import UsageRecord
from models_registry.models import ModelVersion

from . import latency
from .models import Invitation, UsageRollup, UsageRollupCursor
from .services import facts_from_aggregate, ledger_aggregate

QUANTILES = (0.5, 0.95, 0.99)
MAX_RANGE_DAYS = 366


def membership_list(*, user: Any) -> QuerySet[Membership]:
    return Membership.objects.filter(user=user).select_related("organisation").order_by("organisation__name")


def member_list(*, organisation: Organisation) -> QuerySet[Membership]:
    return Membership.objects.filter(organisation=organisation).select_related("user").order_by("user__username")


def invitation_list(*, organisation: Organisation) -> QuerySet[Invitation]:
    return Invitation.objects.filter(organisation=organisation).select_related("invited_by")[:50]


def api_key_list(*, organisation: Organisation) -> QuerySet[APIKey]:
    return APIKey.objects.filter(organisation=organisation).select_related("created_by").order_by("-created")


def latest_calls(*, organisation_id: int, limit: int = 25) -> QuerySet[UsageRecord]:
    return (
        UsageRecord.objects.filter(organisation_id=organisation_id)
        .select_related("api_key", "model_version__model")
        .order_by("-created_at", "-id")[:limit]
    )


# --- Usage facts ----------------------------------------------------------------------------------


@dataclass
class UsageFilter:
    start: date  # inclusive, UTC days
    end: date  # inclusive
    organisation_id: int | None = None
    model_id: int | None = None

    @property
    def days(self) -> list[date]:
        return [self.start + timedelta(days=i) for i in range((self.end - self.start).days + 1)]


@dataclass
class Fact:
    day: date
    organisation_id: int
    model_version_id: int | None
    meter: str
    calls: int
    units: int
    errors: int
    latency_sum_ms: float
    latency_hist: dict[Any, int] = field(default_factory=dict)


def rollup_cursor() -> date | None:
    return UsageRollupCursor.objects.filter(pk=1).values_list("rolled_through", flat=True).first()


def usage_facts(*, flt: UsageFilter) -> list[Fact]:
    """One fact per (day, organisation, version, meter) in the filter: rolled-up days, then live days."""
    cursor = rollup_cursor()
    facts: list[Fact] = []
    live_from = flt.start
    if cursor is not None and cursor > flt.start:
        rolled_end = min(cursor - timedelta(days=1), flt.end)
        facts.extend(_rolled_facts(flt, rolled_end))
        live_from = cursor
    if live_from <= flt.end:
        facts.extend(_live_facts(flt, live_from))
    return facts


def _rolled_facts(flt: UsageFilter, rolled_end: date) -> Iterator[Fact]:
    rows = UsageRollup.objects.filter(day__gte=flt.start, day__lte=rolled_end)
    if flt.organisation_id is not None:
        rows = rows.filter(organisation_id=flt.organisation_id)
    if flt.model_id is not None:
        rows = rows.filter(model_version__model_id=flt.model_id)
    fields = ("day", "organisation_id", "model_version_id", "meter", "calls", "units", "errors", "latency_sum_ms", "latency_hist")
    for values in rows.values_list(*fields):
        yield Fact(*values)


def _live_facts(flt: UsageFilter, live_from: date) -> Iterator[Fact]:
    tz = timezone.get_current_timezone()
    start = datetime.combine(live_from, time.min, tzinfo=tz)
    end = datetime.combine(flt.end + timedelta(days=1), time.min, tzinfo=tz)
    filters: dict[str, Any] = {}
    if flt.organisation_id is not None:
        filters["organisation_id"] = flt.organisation_id
    if flt.model_id is not None:
        filters["model_version__model_id"] = flt.model_id
    for key, fact in facts_from_aggregate(ledger_aggregate(start=start, end=end, **filters)).items():
        yield Fact(*key, **fact)


# --- Shaping facts into charts and tables -----------------------------------------------------------


def _version_labels(ids: set[int | None]) -> dict[int | None, tuple[str, str]]:
    """version id -> (model name, "name:number"); None is a call that named no model (metadata)."""
    labels: dict[int | None, tuple[str, str]] = {None: ("(no model)", "(no model)")}
    for pk, name, number in ModelVersion.objects.filter(pk__in=[i for i in ids if i]).values_list(
        "pk", "model__name", "number"
    ):
        labels[pk] = (name, f"{name}:{number}")
    return labels


def _series(days: list[date], per_day: dict[str, dict[date, float]], limit: int = 8) -> dict[str, Any]:
    """Chart.js data: one dataset per key (largest first; the tail folded into 'others')."""
    totals = sorted(per_day, key=lambda k: -sum(per_day[k].values()))
    head, tail = totals[:limit], totals[limit:]
    datasets = [{"label": k, "data": [per_day[k].get(d, 0) for d in days]} for k in head]
    if tail:
        datasets.append(
            {"label": f"{len(tail)} others", "data": [sum(per_day[k].get(d, 0) for k in tail) for d in days]}
        )
    return {"labels": [d.isoformat() for d in days], "datasets": datasets}


def _stats(calls: int, errors: int, latency_sum: float, hist: dict[int, int]) -> dict[str, Any]:
    p50, p95, p99 = latency.percentiles(hist, QUANTILES)
    return {
        "calls": calls,
        "errors": errors,
        "error_rate": round(100.0 * errors / calls, 2) if calls else 0.0,
        "latency_avg": round(latency_sum / calls, 2) if calls else None,
        "p50": p50,
        "p95": p95,
        "p99": p99,
    }


def usage_dashboard(*, flt: UsageFilter, top: int = 10) -> dict[str, Any]:
    """Everything the usage pages draw: per-day series, per-version latency table, top customers."""
    facts = usage_facts(flt=flt)
    days = flt.days
    versions = _version_labels({f.model_version_id for f in facts})
    by_model: dict[str, dict[date, float]] = defaultdict(lambda: defaultdict(float))
    by_version_calls: dict[str, dict[date, float]] = defaultdict(lambda: defaultdict(float))
    by_version_units: dict[str, dict[date, float]] = defaultdict(lambda: defaultdict(float))
    by_meter: dict[str, dict[date, float]] = defaultdict(lambda: defaultdict(float))
    by_org_calls: dict[int, dict[date, float]] = defaultdict(lambda: defaultdict(float))
    by_org_units: dict[int, dict[date, float]] = defaultdict(lambda: defaultdict(float))
    daily: dict[date, dict[str, Any]] = {d: {"calls": 0, "errors": 0, "sum": 0.0, "hists": []} for d in days}
    per_version: dict[int | None, dict[str, Any]] = defaultdict(lambda: {"calls": 0, "units": 0, "errors": 0, "sum": 0.0, "hists": []})
    per_org: dict[int, dict[str, Any]] = defaultdict(lambda: {"calls": 0, "units": 0, "errors": 0})
    for f in facts:
        model_name, version_label = versions.get(f.model_version_id, ("?", "?"))
        by_model[model_name][f.day] += f.calls
        by_version_calls[version_label][f.day] += f.calls
        by_version_units[version_label][f.day] += f.units
        if f.units:
            by_meter[f.meter or "(none)"][f.day] += f.units
        by_org_calls[f.organisation_id][f.day] += f.calls
        by_org_units[f.organisation_id][f.day] += f.units
        day = daily[f.day]
        day["calls"] += f.calls
        day["errors"] += f.errors
        day["sum"] += f.latency_sum_ms
        day["hists"].append(f.latency_hist)
        version = per_version[f.model_version_id]
        for name, value in (("calls", f.calls), ("units", f.units), ("errors", f.errors)):
            version[name] += value
            per_org[f.organisation_id][name] += value
        version["sum"] += f.latency_sum_ms
        version["hists"].append(f.latency_hist)
    org_names = dict(Organisation.objects.filter(pk__in=list(per_org)).values_list("pk", "name"))

    def org_series(per_day: dict[int, dict[date, float]]) -> dict[str, Any]:
        return _series(days, {org_names.get(k, str(k)): v for k, v in per_day.items()})

    daily_percentiles = {d: latency.percentiles(latency.merge(v["hists"]), QUANTILES) for d, v in daily.items()}
    version_rows = []
    for version_id, v in per_version.items():
        row = _stats(v["calls"], v["errors"], v["sum"], latency.merge(v["hists"]))
        row.update(label=versions.get(version_id, ("?", "?"))[1], units=v["units"], model_version_id=version_id)
        version_rows.append(row)
    version_rows.sort(key=lambda r: -r["calls"])
    top_customers = sorted(
        ({"organisation_id": k, "name": org_names.get(k, str(k)), **v} for k, v in per_org.items()),
        key=lambda r: (-r["units"], -r["calls"]),
    )[:top]
    totals = {
        "calls": sum(d["calls"] for d in daily.values()),
        "errors": sum(d["errors"] for d in daily.values()),
        "units": sum(v["units"] for v in per_version.values()),
    }
    labels = [d.isoformat() for d in days]
    return {
        "totals": totals,
        "calls_by_model": _series(days, by_model),
        "calls_by_version": _series(days, by_version_calls),
        "units_by_version": _series(days, by_version_units),
        "units_by_meter": _series(days, by_meter),
        "calls_by_org": org_series(by_org_calls),
        "units_by_org": org_series(by_org_units),
        "errors": {
            "labels": labels,
            "datasets": [
                {"label": "calls", "data": [daily[d]["calls"] for d in days]},
                {"label": "errors", "data": [daily[d]["errors"] for d in days]},
            ],
        },
        "latency": {
            "labels": labels,
            "datasets": [
                {"label": f"p{int(q * 100)} (ms)", "data": [daily_percentiles[d][i] for d in days]}
                for i, q in enumerate(QUANTILES)
            ],
        },
        "versions": version_rows,
        "top_customers": top_customers,
        "facts": facts,
        "version_labels": versions,
        "org_names": org_names,
    }


def usage_csv_rows(*, flt: UsageFilter) -> Iterator[list[Any]]:
    """Daily aggregates, one row per (day, organisation, model version, meter), for CSV export."""
    facts = sorted(usage_facts(flt=flt), key=lambda f: (f.day, f.organisation_id, f.model_version_id or 0, f.meter))
    versions = _version_labels({f.model_version_id for f in facts})
    org_names = dict(
        Organisation.objects.filter(pk__in={f.organisation_id for f in facts}).values_list("pk", "name")
    )
    yield ["day", "organisation", "model_version", "meter", "calls", "units", "errors", "latency_avg_ms", "latency_p95_ms"]
    for f in facts:
        p95 = latency.percentiles(latency.merge([f.latency_hist]), [0.95])[0]
        yield [
            f.day.isoformat(),
            org_names.get(f.organisation_id, f.organisation_id),
            versions.get(f.model_version_id, ("?", "?"))[1],
            f.meter,
            f.calls,
            f.units,
            f.errors,
            round(f.latency_sum_ms / f.calls, 3) if f.calls else "",
            p95 if p95 is not None else "",
        ]


def usage_call_rows(*, organisation_id: int, start: datetime, end: datetime) -> Iterator[list[Any]]:
    """Every call of one organisation in [start, end), oldest first, for the customer's CSV export."""
    yield ["created_at", "request_id", "client_request_id", "api_key", "face", "model", "version", "meter", "units", "status_code", "latency_ms"]
    rows = (
        UsageRecord.objects.filter(organisation_id=organisation_id, created_at__gte=start, created_at__lt=end)
        .order_by("created_at", "id")
        .values_list(
            "created_at", "request_id", "client_request_id", "api_key__prefix", "face",
            "model_version__model__name", "model_version__number", "meter", "units", "status_code", "latency_ms",
        )
    )
    for row in rows.iterator(chunk_size=2000):
        yield [row[0].isoformat(), *("" if v is None else v for v in row[1:])]

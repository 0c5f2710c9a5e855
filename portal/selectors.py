"""Reads behind the portal and staff pages: memberships, keys, and usage from rollup + ledger."""

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

from django.db.models import Exists, OuterRef, QuerySet
from django.utils import timezone

from apiservice.errors import NotFound
from apiservice.models import APIKey, Membership, Organisation
from billing.models import Meter, UsageRecord
from models_registry import selectors as registry
from models_registry.models import MLModel, ModelVersion

from . import latency
from .models import Invitation, LatencyRollup, UsageRollup, UsageRollupCursor
from .services import ledger_counts, ledger_histograms

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


def api_key_active_count(*, organisation: Organisation) -> int:
    """Keys that work now: neither revoked nor past their expiry (a playground key expires after a day)."""
    return APIKey.objects.active().filter(organisation=organisation).count()


def organisation_label(*, name: str, slug: str) -> str:
    """How staff pages name an organisation: names need not be unique, slugs are."""
    return f"{name} ({slug})"


def organisation_labels(*, ids: Iterable[int]) -> dict[int, str]:
    rows = Organisation.objects.filter(pk__in=list(ids)).values_list("pk", "name", "slug")
    return {pk: organisation_label(name=name, slug=slug) for pk, name, slug in rows}


def model_catalogue(*, organisation_id: int) -> QuerySet[MLModel]:
    """The models a customer can call: public and their own, with at least one ready version."""
    ready = ModelVersion.objects.filter(model=OuterRef("pk"), status=ModelVersion.Status.READY)
    return registry.model_list(organisation_id=organisation_id).filter(Exists(ready))


def model_catalogue_get(*, organisation_id: int, name: str) -> MLModel:
    """A model of the catalogue by name; NotFound for one it hides (no ready version, another's)."""
    model = model_catalogue(organisation_id=organisation_id).filter(name=name).first()
    if model is None:
        raise NotFound(f"Model '{name}' not found.", code="model_not_found", param="model")
    return model


# --- Usage facts ----------------------------------------------------------------------------------


@dataclass
class UsageFilter:
    start: date  # inclusive, UTC days
    end: date  # inclusive
    organisation_id: int | None = None
    model_id: int | None = None
    api_key_id: str | None = None  # the rollups have no key: one key's usage is read from the ledger

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


@dataclass
class UsageData:
    facts: list[Fact] = field(default_factory=list)  # per (day, organisation, version, meter)
    hists: list[tuple[date, int | None, dict[Any, int]]] = field(default_factory=list)  # per (day, version)


def rollup_cursor() -> date | None:
    return UsageRollupCursor.objects.filter(pk=1).values_list("rolled_through", flat=True).first()


def usage_facts(*, flt: UsageFilter) -> UsageData:
    """Counts and latency histograms in the filter: rolled-up days from the rollups, later days live."""
    cursor = rollup_cursor()
    data = UsageData()
    live_from = flt.start
    if cursor is not None and cursor > flt.start and flt.api_key_id is None:
        _rolled(flt, min(cursor - timedelta(days=1), flt.end), data)
        live_from = cursor
    if live_from <= flt.end:
        _live(flt, live_from, data)
    return data


def _rolled(flt: UsageFilter, rolled_end: date, data: UsageData) -> None:
    rows = UsageRollup.objects.filter(day__gte=flt.start, day__lte=rolled_end)
    if flt.organisation_id is not None:
        rows = rows.filter(organisation_id=flt.organisation_id)
    if flt.model_id is not None:
        rows = rows.filter(model_version__model_id=flt.model_id)
    fields = ("day", "organisation_id", "model_version_id", "meter", "calls", "units", "errors", "latency_sum_ms")
    data.facts.extend(Fact(*values) for values in rows.values_list(*fields))
    hist_rows: Any
    if flt.organisation_id is not None:  # one organisation's histograms: few rows
        hist_rows = rows.exclude(latency_hist={}).values_list("day", "model_version_id", "latency_hist")
    else:
        everyone = LatencyRollup.objects.filter(day__gte=flt.start, day__lte=rolled_end)
        if flt.model_id is not None:
            everyone = everyone.filter(model_version__model_id=flt.model_id)
        hist_rows = everyone.values_list("day", "model_version_id", "latency_hist")
    data.hists.extend(hist_rows)


def _live(flt: UsageFilter, live_from: date, data: UsageData) -> None:
    tz = timezone.get_current_timezone()
    start = datetime.combine(live_from, time.min, tzinfo=tz)
    end = datetime.combine(flt.end + timedelta(days=1), time.min, tzinfo=tz)
    filters: dict[str, Any] = {}
    if flt.organisation_id is not None:
        filters["organisation_id"] = flt.organisation_id
    if flt.model_id is not None:
        filters["model_version__model_id"] = flt.model_id
    if flt.api_key_id is not None:
        filters["api_key_id"] = flt.api_key_id
    data.facts.extend(Fact(*values) for values in ledger_counts(start=start, end=end, **filters))
    data.hists.extend(
        (day, version, hist) for (day, version), hist in ledger_histograms(start=start, end=end, **filters).items()
    )


def _calls(flt: UsageFilter) -> QuerySet[UsageRecord]:
    """One organisation's calls on the filter's days (local time), to its model and with its key if any."""
    tz = timezone.get_current_timezone()
    calls = UsageRecord.objects.filter(
        organisation_id=flt.organisation_id or 0,  # the portal always names one
        created_at__gte=datetime.combine(flt.start, time.min, tzinfo=tz),
        created_at__lt=datetime.combine(flt.end + timedelta(days=1), time.min, tzinfo=tz),
    )
    if flt.model_id is not None:
        calls = calls.filter(model_version__model_id=flt.model_id)
    if flt.api_key_id is not None:
        calls = calls.filter(api_key_id=flt.api_key_id)
    return calls


def latest_calls(*, flt: UsageFilter, limit: int = 25) -> QuerySet[UsageRecord]:
    """The filter's latest calls, newest first."""
    return _calls(flt).select_related("api_key", "model_version__model").order_by("-created_at", "-id")[:limit]


# --- Shaping facts into charts and tables -----------------------------------------------------------


def _version_labels(ids: set[int | None]) -> dict[int | None, tuple[str, str]]:
    """version id -> (model name, "name:number"); None is a call that named no model (metadata)."""
    labels: dict[int | None, tuple[str, str]] = {None: ("(no model)", "(no model)")}
    for pk, name, number in ModelVersion.objects.filter(pk__in=[i for i in ids if i]).values_list(
        "pk", "model__name", "number"
    ):
        labels[pk] = (name, f"{name}:{number}")
    return labels


def _series(
    days: list[date],
    per_day: Mapping[Any, dict[date, float]],
    limit: int = 8,
    labels: Mapping[Any, str] | None = None,
) -> dict[str, Any]:
    """Chart.js data: one dataset per key (largest first; the tail folded into 'others').

    Keys are what identifies a series (an organisation's id); `labels` names them (default: the key).
    """
    totals = sorted(per_day, key=lambda k: -sum(per_day[k].values()))
    head, tail = totals[:limit], totals[limit:]
    named = labels or {}
    datasets = [{"label": named.get(k, str(k)), "data": [per_day[k].get(d, 0) for d in days]} for k in head]
    if tail:
        datasets.append(
            {"label": f"{len(tail)} others", "data": [sum(per_day[k].get(d, 0) for k in tail) for d in days]}
        )
    return {"labels": [d.isoformat() for d in days], "datasets": datasets}


def _stats(calls: int, errors: int, latency_sum: float, latency_calls: int, hist: dict[int, int]) -> dict[str, Any]:
    """A version's row of the latency table. The latency figures (average over `latency_calls`, and the
    percentiles of `hist`) are of its online predictions alone: batch rows and bundle downloads are
    recorded by the worker or before their bytes stream, at ~0 ms, and would drag them down."""
    p50, p95, p99 = latency.percentiles(hist, QUANTILES)
    return {
        "calls": calls,
        "errors": errors,
        "error_rate": round(100.0 * errors / calls, 2) if calls else 0.0,
        "latency_avg": round(latency_sum / latency_calls, 2) if latency_calls else None,
        "p50": p50,
        "p95": p95,
        "p99": p99,
    }


def usage_dashboard(*, flt: UsageFilter, top: int = 10) -> dict[str, Any]:
    """Everything the usage pages draw: per-day series, per-version latency table, top customers."""
    data = usage_facts(flt=flt)
    days = flt.days
    versions = _version_labels({f.model_version_id for f in data.facts})

    def grid() -> dict[str, dict[date, float]]:
        return defaultdict(lambda: defaultdict(int))  # counts: 30, not 30.0, in the charts' data tables

    by_model, by_version_calls, by_version_units, by_meter = grid(), grid(), grid(), grid()
    by_org_calls: dict[int, dict[date, float]] = defaultdict(lambda: defaultdict(int))
    by_org_units: dict[int, dict[date, float]] = defaultdict(lambda: defaultdict(int))
    daily = {d: [0, 0] for d in days}  # calls, errors
    # calls, units, errors, and the latency sum and count of the online predictions among them
    per_version: dict[int | None, list[float]] = defaultdict(lambda: [0, 0, 0, 0.0, 0])
    per_org: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0])  # calls, units, errors
    units_by_org_meter: dict[tuple[int, str], int] = defaultdict(int)  # for the revenue estimate
    for f in data.facts:
        if f.units and f.meter:
            units_by_org_meter[(f.organisation_id, f.meter)] += f.units
        model_name, version_label = versions.get(f.model_version_id, ("?", "?"))
        by_model[model_name][f.day] += f.calls
        by_version_calls[version_label][f.day] += f.calls
        by_version_units[version_label][f.day] += f.units
        if f.units:
            by_meter[f.meter or "(none)"][f.day] += f.units
        by_org_calls[f.organisation_id][f.day] += f.calls
        by_org_units[f.organisation_id][f.day] += f.units
        daily[f.day][0] += f.calls
        daily[f.day][1] += f.errors
        v, o = per_version[f.model_version_id], per_org[f.organisation_id]
        v[0] += f.calls
        v[1] += f.units
        v[2] += f.errors
        if f.meter == Meter.ONLINE_PREDICTIONS:
            v[3] += f.latency_sum_ms
            v[4] += f.calls
        o[0] += f.calls
        o[1] += f.units
        o[2] += f.errors
    hists_by_day: dict[date, list[dict[Any, int]]] = defaultdict(list)
    hists_by_version: dict[int | None, list[dict[Any, int]]] = defaultdict(list)
    for day, version_id, hist in data.hists:
        hists_by_day[day].append(hist)
        hists_by_version[version_id].append(hist)
    orgs = list(Organisation.objects.filter(pk__in=list(per_org)).values_list("pk", "name", "slug"))
    org_names = {pk: name for pk, name, _ in orgs}
    org_labels = {pk: organisation_label(name=name, slug=slug) for pk, name, slug in orgs}

    daily_percentiles = {d: latency.percentiles(latency.merge(hists_by_day.get(d, [])), QUANTILES) for d in days}
    version_rows = []
    for version_id, (calls, units, errors, latency_sum, latency_calls) in per_version.items():
        hist = latency.merge(hists_by_version.get(version_id, []))
        row = _stats(int(calls), int(errors), latency_sum, int(latency_calls), hist)
        row.update(label=versions.get(version_id, ("?", "?"))[1], units=int(units), model_version_id=version_id)
        version_rows.append(row)
    version_rows.sort(key=lambda r: -r["calls"])
    customers: list[dict[str, Any]] = [
        {
            "organisation_id": k,
            "name": org_names.get(k, str(k)),
            "label": org_labels.get(k, str(k)),
            "calls": v[0],
            "units": v[1],
            "errors": v[2],
        }
        for k, v in per_org.items()
    ]
    top_customers = sorted(customers, key=lambda r: (-r["units"], -r["calls"]))[:top]
    totals = {
        "calls": sum(d[0] for d in daily.values()),
        "errors": sum(d[1] for d in daily.values()),
        "units": sum(int(v[1]) for v in per_version.values()),
    }
    labels = [d.isoformat() for d in days]
    return {
        "totals": totals,
        "calls_by_model": _series(days, by_model),
        "calls_by_version": _series(days, by_version_calls),
        "units_by_version": _series(days, by_version_units),
        "units_by_meter": _series(days, by_meter),
        "calls_by_org": _series(days, by_org_calls, labels=org_labels),
        "units_by_org": _series(days, by_org_units, labels=org_labels),
        "errors": {
            "labels": labels,
            "datasets": [
                {"label": "calls", "data": [daily[d][0] for d in days]},
                {"label": "errors", "data": [daily[d][1] for d in days]},
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
        "units_by_org_meter": dict(units_by_org_meter),
    }


def usage_csv_rows(*, flt: UsageFilter) -> Iterator[list[Any]]:
    """Daily aggregates, one row per (day, organisation, model version, meter), for CSV export."""
    facts = sorted(
        usage_facts(flt=flt).facts, key=lambda f: (f.day, f.organisation_id, f.model_version_id or 0, f.meter)
    )
    versions = _version_labels({f.model_version_id for f in facts})
    org_labels = organisation_labels(ids={f.organisation_id for f in facts})
    yield ["day", "organisation", "model_version", "meter", "calls", "units", "errors", "latency_avg_ms"]
    for f in facts:
        yield [
            f.day.isoformat(),
            org_labels.get(f.organisation_id, f.organisation_id),
            versions.get(f.model_version_id, ("?", "?"))[1],
            f.meter,
            f.calls,
            f.units,
            f.errors,
            round(f.latency_sum_ms / f.calls, 3) if f.calls else "",
        ]


def usage_call_rows(*, flt: UsageFilter) -> Iterator[list[Any]]:
    """Every call the filter selects (as `latest_calls`), oldest first, for the CSV."""
    yield [
        "created_at",
        "request_id",
        "client_request_id",
        "api_key",
        "face",
        "model",
        "version",
        "meter",
        "units",
        "status_code",
        "latency_ms",
    ]
    rows = (
        _calls(flt)
        .order_by("created_at", "id")
        .values_list(
            "created_at",
            "request_id",
            "client_request_id",
            "api_key__prefix",
            "face",
            "model_version__model__name",
            "model_version__number",
            "meter",
            "units",
            "status_code",
            "latency_ms",
        )
    )
    for row in rows.iterator(chunk_size=2000):
        yield [row[0].isoformat(), *("" if v is None else v for v in row[1:])]

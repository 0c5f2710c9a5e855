"""The usage push (an outbox) and the daily reconciliation with Stripe.

1. Claim (batches of one organisation's rows, a transaction each): unreported billable ledger rows of
   organisations with a Stripe customer are locked (`SKIP LOCKED`), grouped per (organisation, meter,
   UTC day, side of the billing period's start) into an immutable `UsageReport`, and pointed at it. A
   crash before a batch commits claims none of its rows.
2. Send: each pending report becomes one meter event whose `identifier` (and idempotency key) is
   the report id, timestamped at its last call (inside Stripe's 35-day window). A crash after Stripe
   accepted but before we marked it is resent with the same identifier: Stripe keeps one. Stripe
   deduplicates identifiers for 24 h only, so a report it may have counted is never resent after that.
3. Transient errors back off exponentially up to `BILLING_USAGE_PUSH_MAX_BACKOFF_SECONDS`; reports
   that can no longer be sent in Stripe's window, or that Stripe rejects, are flagged for staff
   (status out_of_window / failed in the admin), never dropped.
"""

import logging
import uuid
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q, Sum
from django.db.models.functions import TruncDay
from django.utils import timezone

from . import stripe_client
from .models import BillingAccount, BillingMeter, ReconciliationIssue, UsageRecord, UsageReport

logger = logging.getLogger(__name__)
STRIPE_WINDOW = timedelta(days=35)
WINDOW_MARGIN = timedelta(hours=1)  # leave time to send before Stripe's window closes
MAX_ATTEMPTS = 20
# Stripe enforces a meter event identifier's uniqueness "within a rolling period of at least 24 hours";
# past that (less a margin) the same identifier could be counted a second time.
IDENTIFIER_DEDUPE = timedelta(hours=23)
TOO_LATE_TO_RESEND = (
    "Not sent again: an attempt more than 24 h ago ended without a clear answer, so Stripe may have counted "
    "it, and Stripe deduplicates an identifier for 24 h only. Compare this report's day in the "
    "reconciliation, and bill what is missing by hand."
)


def _resendable(now: datetime) -> Q:
    """Reports whose identifier Stripe still deduplicates, or that Stripe cannot have counted."""
    return Q(maybe_counted=False) | Q(first_attempt_at__isnull=True) | Q(first_attempt_at__gte=now - IDENTIFIER_DEDUPE)


def _window_start(now: datetime) -> datetime:
    return now - STRIPE_WINDOW + WINDOW_MARGIN


# Batches one organisation's claim may take in one run (each of BILLING_USAGE_PUSH_BATCH rows): a bound on
# a run, far above any backlog a minute can build.
MAX_BATCHES_PER_ORGANISATION = 1000


def usage_reports_claim(*, now: datetime | None = None, limit: int | None = None) -> list[str]:
    """Claim unreported ledger rows into reports; returns the new report ids.

    Only rows of organisations with a Stripe customer, made since their subscription began
    (`metered_since`), are billable; earlier rows were free-plan usage and are never pushed. Every
    organisation's backlog is claimed, in batches of `limit` (BILLING_USAGE_PUSH_BATCH) rows, each batch
    in its own transaction: one organisation's backlog neither delays the others nor makes one huge
    transaction.
    """
    now = now or timezone.now()
    accounts = BillingAccount.objects.exclude(stripe_customer_id="").exclude(metered_since__isnull=True)
    batch = limit or settings.BILLING_USAGE_PUSH_BATCH
    report_ids: list[str] = []
    for org, customer, since, period_start in accounts.order_by("pk").values_list(
        "organisation_id", "stripe_customer_id", "metered_since", "current_period_start"
    ):
        for _ in range(MAX_BATCHES_PER_ORGANISATION):
            claimed, rows = _claim_batch(
                org=org, customer=customer, since=since, period_start=period_start, now=now, batch=batch
            )
            report_ids += claimed
            if rows < batch:
                break
    return report_ids


def _claim_batch(
    *, org: int, customer: str, since: datetime | None, period_start: datetime | None, now: datetime, batch: int
) -> tuple[list[str], int]:
    """One transaction: up to `batch` of the organisation's unreported rows into reports per (meter, UTC day,
    side of the current billing period's start). A report is timestamped at its last call, and Stripe bills
    an event in the period its timestamp falls in: calls made before the period began, in a report with
    later ones, were billed in the new period (or never, the subscription ending with the old one)."""
    with transaction.atomic():
        rows = list(
            UsageRecord.objects.select_for_update(skip_locked=True)
            .filter(organisation_id=org, report__isnull=True, units__gt=0, status_code__lt=400)
            .filter(created_at__gte=since)
            .exclude(meter="")
            .order_by("id")
            .values_list("id", "meter", "units", "created_at")[:batch]
        )
        groups: dict[tuple[str, date, bool], list[tuple[int, int, datetime]]] = defaultdict(list)
        for row_id, meter, units, created_at in rows:
            in_period = period_start is None or created_at >= period_start
            groups[(meter, created_at.astimezone(UTC).date(), in_period)].append((row_id, units, created_at))
        claimed = [_report_create(org, meter, customer, members, now) for (meter, *_), members in groups.items()]
    return claimed, len(rows)


def _report_create(org: int, meter: str, customer: str, members: list[tuple[int, int, datetime]], now: datetime) -> str:
    first_at = min(m[2] for m in members)
    last_at = max(m[2] for m in members)
    report = UsageReport.objects.create(
        id="mmur_" + uuid.uuid4().hex,
        organisation_id=org,
        meter=meter,
        stripe_customer_id=customer,
        units=sum(m[1] for m in members),
        rows=len(members),
        first_at=first_at,
        last_at=last_at,
        event_timestamp=min(last_at, now),
        created_at=now,
        next_attempt_at=now,
        status=UsageReport.Status.OUT_OF_WINDOW if last_at < _window_start(now) else UsageReport.Status.PENDING,
    )
    UsageRecord.objects.filter(id__in=[m[0] for m in members]).update(report=report)
    return report.id


def usage_report_send(*, report_id: str, now: datetime | None = None) -> str:
    """Send one pending report as a meter event; safe to repeat (same identifier)."""
    now = now or timezone.now()
    report = UsageReport.objects.filter(pk=report_id, status=UsageReport.Status.PENDING).first()
    if report is None:
        return "not_pending"
    pending = UsageReport.objects.filter(pk=report.pk, status=UsageReport.Status.PENDING)
    if report.event_timestamp < _window_start(now):
        pending.update(status=UsageReport.Status.OUT_OF_WINDOW, last_error="Older than Stripe's 35-day window.")
        return "out_of_window"
    if pending.exclude(_resendable(now)).update(status=UsageReport.Status.FAILED, last_error=TOO_LATE_TO_RESEND):
        return "failed"
    # Until Stripe answers, this attempt may be counted (a crash would leave it so): the flag is set first
    # and put back only by a clear refusal.
    pending.update(first_attempt_at=report.first_attempt_at or now, maybe_counted=True)
    event_name = BillingMeter.objects.get(meter=report.meter).event_name
    try:
        stripe_client.meter_event_create(
            event_name=event_name,
            customer_id=report.stripe_customer_id,
            value=report.units,
            identifier=report.id,
            timestamp=int(report.event_timestamp.timestamp()),
            idempotency_key=f"{report.id}.resend{report.resends}" if report.resends else report.id,
        )
    except stripe_client.StripeTransient as exc:
        return _backoff(report, str(exc), now, maybe_counted=exc.maybe_done)
    except stripe_client.StripeRejected as exc:
        status = UsageReport.Status.OUT_OF_WINDOW if exc.param == "timestamp" else UsageReport.Status.FAILED
        pending.update(
            status=status, last_error=str(exc)[:2000], attempts=report.attempts + 1, maybe_counted=report.maybe_counted
        )
        return str(status)
    pending.update(status=UsageReport.Status.SENT, sent_at=now, attempts=report.attempts + 1, last_error="")
    return "sent"


def _backoff(report: UsageReport, error: str, now: datetime, *, maybe_counted: bool) -> str:
    attempts = report.attempts + 1
    delay = min(30 * 2 ** min(attempts, 16), settings.BILLING_USAGE_PUSH_MAX_BACKOFF_SECONDS)
    status = UsageReport.Status.FAILED if attempts >= MAX_ATTEMPTS else UsageReport.Status.PENDING
    UsageReport.objects.filter(pk=report.pk, status=UsageReport.Status.PENDING).update(
        attempts=attempts,
        next_attempt_at=now + timedelta(seconds=delay),
        last_error=error[:2000],
        status=status,
        maybe_counted=report.maybe_counted or maybe_counted,
    )
    return "retry_later"


def usage_reports_retry(*, report_ids: list[str], now: datetime | None = None) -> int:
    """Staff: put failed reports still inside Stripe's window back in the queue (same identifier, so a
    report Stripe did accept is not counted twice), unless Stripe may have counted one more than 24 h ago
    (it deduplicates identifiers for 24 h only). Returns how many will be sent again."""
    now = now or timezone.now()
    failed = UsageReport.objects.filter(
        pk__in=report_ids, status=UsageReport.Status.FAILED, event_timestamp__gte=_window_start(now)
    )
    failed.exclude(_resendable(now)).update(last_error=TOO_LATE_TO_RESEND)
    return failed.filter(_resendable(now)).update(
        status=UsageReport.Status.PENDING, attempts=0, next_attempt_at=now, last_error="", resends=F("resends") + 1
    )


def usage_push(*, now: datetime | None = None) -> dict[str, int]:
    """Claim, then send every due report. The beat task's body."""
    if not stripe_client.configured():
        return {}
    now = now or timezone.now()
    usage_reports_claim(now=now)
    outcomes: dict[str, int] = defaultdict(int)
    due = UsageReport.objects.filter(status=UsageReport.Status.PENDING, next_attempt_at__lte=now)
    for report_id in due.order_by("created_at").values_list("id", flat=True):
        outcomes[usage_report_send(report_id=report_id, now=now)] += 1
    return dict(outcomes)


def usage_reconcile(*, days: int = 3, now: datetime | None = None, include_today: bool = False) -> int:
    """Compare sent totals with Stripe's meter event summaries per customer, meter and day: the `days`
    complete UTC days before today, and today so far with `include_today` (staff checking a fix)."""
    if not stripe_client.configured():
        return 0
    now = now or timezone.now()
    end = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start = end - timedelta(days=days)
    if include_today:
        end += timedelta(days=1)
    meters = {m.meter: m.stripe_meter_id for m in BillingMeter.objects.exclude(stripe_meter_id="")}
    # Only organisations whose usage is pushed (subscribed at some point): one that merely opened
    # Checkout has a customer too, and nothing of ours to compare.
    accounts = BillingAccount.objects.exclude(stripe_customer_id="").exclude(metered_since__isnull=True).order_by("pk")
    issues = 0
    for account in accounts:
        for meter, meter_id in meters.items():
            try:
                issues += _reconcile_one(account, meter, meter_id, start, end)
            except (stripe_client.StripeTransient, stripe_client.StripeRejected) as exc:
                # One customer Stripe refuses (deleted in the dashboard) or a blip must not stop the others.
                logger.warning(
                    "reconciliation skipped organisation %s meter %s: %s", account.organisation_id, meter, exc
                )
    return issues


def _reconcile_one(account: BillingAccount, meter: str, meter_id: str, start: datetime, end: datetime) -> int:
    ours: dict[date, int] = defaultdict(int)
    sent = UsageReport.objects.filter(
        organisation_id=account.organisation_id,
        stripe_customer_id=account.stripe_customer_id,  # what this customer was sent (not a replaced one)
        meter=meter,
        status=UsageReport.Status.SENT,
        event_timestamp__gte=start,
        event_timestamp__lt=end,
    )
    for item in sent.annotate(day=TruncDay("event_timestamp")).values("day").annotate(units=Sum("units")):
        ours[item["day"].date()] = int(item["units"])
    theirs: dict[date, int] = defaultdict(int)
    summaries: list[dict[str, Any]] = stripe_client.meter_event_summaries(
        meter_id=meter_id,
        customer_id=account.stripe_customer_id,
        start=int(start.timestamp()),
        end=int(end.timestamp()),
    )
    for summary in summaries:
        theirs[datetime.fromtimestamp(summary["start_time"], tz=UTC).date()] += int(summary["aggregated_value"])
    issues = 0
    for day in set(ours) | set(theirs):
        if ours[day] != theirs[day]:
            ReconciliationIssue.objects.update_or_create(
                organisation_id=account.organisation_id,
                meter=meter,
                day=day,
                defaults={"ours": ours[day], "stripe": theirs[day], "resolved": False},
            )
            issues += 1
        else:
            ReconciliationIssue.objects.filter(organisation_id=account.organisation_id, meter=meter, day=day).update(
                resolved=True
            )
    return issues

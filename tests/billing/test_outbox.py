import subprocess
import sys
from datetime import timedelta

import pytest
from django.utils import timezone

from apiservice.auth import Principal
from billing import outbox, payments
from billing.models import BillingAccount, ReconciliationIssue, UsageRecord, UsageReport
from billing.services import usage_record
from tests.billing.test_stripe import synced  # noqa: F401  (fixture)
from tests.live import ROOT, subprocess_env


def ledger(org, units, meter="online_predictions", at=None, status=200):
    principal = Principal(api_key_id=None, prefix="", organisation_id=org.pk, scopes=frozenset(), expires_at=None)
    request_id = f"req_t{UsageRecord.objects.count()}_{timezone.now().timestamp()}"
    usage_record(
        request_id=request_id,
        principal=principal,
        face="test",
        status_code=status,
        latency_ms=1.0,
        units=units,
        meter=meter,
    )
    if at is not None:
        UsageRecord.objects.filter(request_id=request_id).update(created_at=at)


@pytest.fixture
def customer(synced, org):  # noqa: F811
    """A subscribed organisation: its usage of the last 60 days is billable."""
    customer_id = payments.customer_ensure(organisation_id=org.pk)
    BillingAccount.objects.filter(organisation=org).update(metered_since=timezone.now() - timedelta(days=60))
    return customer_id


def stripe_total(stripe, customer, meter="online_predictions"):
    return stripe.total(customer, f"mm_{meter}")


def ledger_total(org, meter="online_predictions"):
    return sum(
        UsageRecord.objects.filter(organisation=org, meter=meter, status_code__lt=400).values_list("units", flat=True)
    )


def test_it_pushes_each_meter_once_with_the_report_id_as_identifier(synced, org, customer):  # noqa: F811
    for units in (3, 4):
        ledger(org, units)
    ledger(org, 7, meter="batch_rows")
    ledger(org, 0)
    assert outbox.usage_push() == {"sent": 2}
    assert outbox.usage_push() == {}
    assert stripe_total(synced, customer) == 7
    assert stripe_total(synced, customer, "batch_rows") == 7
    identifiers = {e["identifier"] for e in synced.meter_events}
    assert identifiers == set(UsageReport.objects.values_list("id", flat=True))
    assert not UsageRecord.objects.filter(units__gt=0, report__isnull=True).exists()


def test_it_leaves_organisations_without_a_customer_alone(synced, org, other_org, customer):  # noqa: F811
    ledger(other_org, 5)
    outbox.usage_push()
    assert UsageRecord.objects.get(organisation=other_org).report_id is None


def test_it_never_bills_usage_from_before_the_subscription(synced, org, customer):  # noqa: F811
    ledger(org, 5, at=timezone.now() - timedelta(days=2))
    BillingAccount.objects.filter(organisation=org).update(metered_since=timezone.now() - timedelta(days=1))
    ledger(org, 1)
    outbox.usage_push()
    assert stripe_total(synced, customer) == 1
    assert UsageRecord.objects.get(units=5).report_id is None


def test_calls_before_the_billing_period_began_are_not_sent_in_a_report_timestamped_inside_it(
    synced,  # noqa: F811
    org,
    customer,
):
    """The report of a day was timestamped at its last call: calls of the old period, claimed with calls of
    the new one (a backlog, or the minute around the renewal), were billed in the new period."""
    day = (timezone.now() - timedelta(days=2)).replace(hour=12, minute=0, second=0, microsecond=0)
    BillingAccount.objects.filter(organisation=org).update(current_period_start=day)
    ledger(org, 5, at=day - timedelta(minutes=10))
    ledger(org, 2, at=day + timedelta(minutes=10))
    outbox.usage_push()
    stamps = sorted((e["timestamp"], int(e["payload"]["value"])) for e in synced.meter_events)
    assert stamps == [
        (int((day - timedelta(minutes=10)).timestamp()), 5),
        (int((day + timedelta(minutes=10)).timestamp()), 2),
    ]


def test_it_loses_nothing_when_it_crashes_after_claiming(synced, org, customer):  # noqa: F811
    ledger(org, 5)
    outbox.usage_reports_claim()  # ... and the process dies before sending
    ledger(org, 2)
    outbox.usage_push()
    assert stripe_total(synced, customer) == ledger_total(org) == 7


def run_push_until_killed(stripe, mode):
    stripe.hold(mode)
    process = subprocess.Popen(
        [sys.executable, "manage.py", "push_usage"],
        cwd=ROOT,
        env=subprocess_env(STRIPE_SECRET_KEY="sk_test_local", STRIPE_API_BASE=stripe.url),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert stripe.arrived.wait(30), "the push never reached Stripe"
        process.kill()  # SIGKILL: no cleanup, no marking
        process.wait(10)
    finally:
        stripe.release()


@pytest.mark.parametrize("mode", ["before_accept", "after_accept"])
def test_it_counts_nothing_twice_when_it_crashes_while_sending(transactional_db, synced, org, customer, mode):  # noqa: F811
    ledger(org, 5)
    run_push_until_killed(synced, mode)
    report = UsageReport.objects.get()
    assert report.status == "pending"
    assert stripe_total(synced, customer) == (5 if mode == "after_accept" else 0)
    ledger(org, 1)
    outbox.usage_push()
    assert UsageReport.objects.filter(status="sent").count() == 2
    assert stripe_total(synced, customer) == ledger_total(org) == 6


def test_it_backs_off_on_transient_errors_and_retries_the_same_identifier(synced, org, customer):  # noqa: F811
    ledger(org, 3)
    synced.fail_meter_events = 1
    assert outbox.usage_push() == {"retry_later": 1}
    report = UsageReport.objects.get()
    assert (report.status, report.attempts) == ("pending", 1)
    assert report.next_attempt_at > timezone.now()
    assert outbox.usage_push() == {}  # not due yet
    assert outbox.usage_push(now=report.next_attempt_at) == {"sent": 1}
    assert stripe_total(synced, customer) == 3


def test_it_keeps_usage_pending_while_stripe_refuses_our_api_key(synced, org, customer):  # noqa: F811
    """A revoked or rotated secret key (401) marked every report 'failed' for good: that usage was never billed."""
    from django.test import override_settings

    ledger(org, 5)
    with override_settings(STRIPE_SECRET_KEY="sk_live_revoked"):  # the server knows only sk_test_ keys
        assert outbox.usage_push() == {"retry_later": 1}
    report = UsageReport.objects.get()
    assert (report.status, report.attempts) == ("pending", 1)
    assert outbox.usage_push(now=report.next_attempt_at) == {"sent": 1}  # the key was fixed
    assert stripe_total(synced, customer) == 5


def test_it_flags_rows_outside_stripes_window_for_staff(synced, org, customer):  # noqa: F811
    ledger(org, 9, at=timezone.now() - timedelta(days=40))
    ledger(org, 1)
    outbox.usage_push()
    assert UsageReport.objects.get(units=9).status == "out_of_window"
    assert stripe_total(synced, customer) == 1


def test_it_flags_a_pending_report_that_aged_out(synced, org, customer):  # noqa: F811
    ledger(org, 2)
    outbox.usage_reports_claim()
    assert outbox.usage_push(now=timezone.now() + timedelta(days=36)) == {"out_of_window": 1}
    assert stripe_total(synced, customer) == 0


def plant_stripe_usage(customer_id: str, *, value: int = 3, identifier: str = "planted") -> None:
    """A meter event Stripe has and our ledger doesn't: a difference for reconciliation to find."""
    from billing import stripe_client

    stripe_client.meter_event_create(
        event_name="mm_online_predictions",
        customer_id=customer_id,
        value=value,
        identifier=identifier,
        timestamp=int(timezone.now().timestamp()),
    )


def test_it_reconciles_and_catches_a_planted_difference(synced, org, customer):  # noqa: F811
    ledger(org, 4)
    outbox.usage_push()
    tomorrow = timezone.now() + timedelta(days=1)
    assert outbox.usage_reconcile(now=tomorrow) == 0
    plant_stripe_usage(customer)
    assert outbox.usage_reconcile(now=tomorrow) == 1
    issue = ReconciliationIssue.objects.get()
    assert (issue.meter, issue.ours, issue.stripe, issue.resolved) == ("online_predictions", 4, 7, False)


def test_it_reconciles_every_other_customer_when_stripe_refuses_one(synced, org, other_org, customer):  # noqa: F811
    """A customer deleted in Stripe's dashboard made the daily task raise on it: nobody after it was checked."""

    first, second = sorted([org, other_org], key=lambda o: o.pk)
    other_customer = payments.customer_ensure(organisation_id=other_org.pk)
    BillingAccount.objects.filter(organisation=other_org).update(metered_since=timezone.now() - timedelta(days=60))
    for organisation in (first, second):
        ledger(organisation, 4)
    outbox.usage_push()
    for customer_id in (customer, other_customer):
        plant_stripe_usage(customer_id, identifier=f"planted-{customer_id}")
    gone = BillingAccount.objects.get(organisation=first).stripe_customer_id
    del synced.objects[gone]  # deleted in Stripe: its summaries are a 404

    assert outbox.usage_reconcile(now=timezone.now() + timedelta(days=1)) == 1
    issue = ReconciliationIssue.objects.get()
    assert (issue.organisation_id, issue.ours, issue.stripe) == (second.pk, 4, 7)


def test_staff_send_a_failed_report_again_from_the_admin(admin_client, synced, org, customer):  # noqa: F811
    """Failed reports were listed for staff with nothing to do about them: the usage stayed unbilled."""
    ledger(org, 6)
    gone = synced.objects.pop(customer)  # Stripe refuses the customer: the report fails
    assert outbox.usage_push() == {"failed": 1}
    report = UsageReport.objects.get()
    synced.objects[customer] = gone  # the customer is back (restored, or the right Stripe account)

    response = admin_client.post(
        "/admin/billing/usagereport/",
        {"action": "send_again", "_selected_action": [report.pk]},
        follow=True,
    )
    assert response.status_code == 200
    assert "1 report(s) will be sent again" in response.content.decode()
    assert outbox.usage_push() == {"sent": 1}
    assert stripe_total(synced, customer) == 6


def test_staff_cannot_send_again_a_report_outside_stripes_window(admin_client, synced, org, customer):  # noqa: F811
    ledger(org, 9, at=timezone.now() - timedelta(days=40))
    outbox.usage_push()
    report = UsageReport.objects.get()
    assert report.status == "out_of_window"
    admin_client.post("/admin/billing/usagereport/", {"action": "send_again", "_selected_action": [report.pk]})
    report.refresh_from_db()
    assert report.status == "out_of_window"


def test_staff_reconcile_by_hand_and_see_a_difference_resolved(synced, org, customer):  # noqa: F811
    """Reconciliation ran only from beat, once a day: after fixing a difference staff had to wait a day to
    see it resolved."""
    import io

    from django.core.management import call_command

    ledger(org, 4)
    outbox.usage_push()
    plant_stripe_usage(customer)
    out = io.StringIO()
    call_command("reconcile_usage", "--days", "2", "--include-today", stdout=out)
    assert "1 difference" in out.getvalue()
    assert ReconciliationIssue.objects.get().resolved is False


def test_one_push_sends_every_unreported_row_whoever_it_belongs_to(synced, org, other_org, customer, settings):  # noqa: F811
    """A push claimed at most BILLING_USAGE_PUSH_BATCH rows (5,000) a minute, the first organisation's
    first: past ~80 billable calls a second the backlog only grew, the last organisations waited, and
    rows older than Stripe's 35 days were never billed."""
    settings.BILLING_USAGE_PUSH_BATCH = 3
    other_customer = payments.customer_ensure(organisation_id=other_org.pk)
    BillingAccount.objects.filter(organisation=other_org).update(metered_since=timezone.now() - timedelta(days=60))
    first, second = sorted([(org, customer), (other_org, other_customer)], key=lambda pair: pair[0].pk)
    for _ in range(10):
        ledger(first[0], 1)
    ledger(second[0], 4)
    outbox.usage_push()
    assert stripe_total(synced, first[1]) == 10
    assert stripe_total(synced, second[1]) == 4
    assert not UsageRecord.objects.filter(units__gt=0, report__isnull=True).exists()


def test_it_reconciles_more_days_than_one_page_of_stripes_summaries(synced, org, customer):  # noqa: F811
    """Stripe answers 10 summaries a page: a reconciliation over 15 days read only the first 10 and
    recorded the later days' usage as missing from Stripe."""
    import io

    from django.core.management import call_command

    ledger(org, 4, at=timezone.now() - timedelta(days=1))
    outbox.usage_push()
    for days in ("15", "120"):  # past one page of 10, and past one page of 100
        call_command("reconcile_usage", "--days", days, stdout=io.StringIO())
        assert not ReconciliationIssue.objects.exists()


@pytest.mark.parametrize("days", ["-1", "1000000"])
def test_reconcile_usage_refuses_a_number_of_days_it_cannot_go_back(synced, days):  # noqa: F811
    """A million days went back before year 1: an OverflowError traceback instead of a usage error."""
    import io

    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match="--days must be 0 to 3650"):
        call_command("reconcile_usage", "--days", days, stdout=io.StringIO())


def test_it_reconciles_each_customer_with_what_was_sent_to_that_customer(synced, org, customer):  # noqa: F811
    """After the organisation's Stripe customer was replaced, the old customer's reports were counted
    against the new one, and reconciliation recorded a difference that was none."""
    ledger(org, 4)
    outbox.usage_push()
    replacement = synced.customers_create({"name": "replacement"})["id"]
    BillingAccount.objects.filter(organisation=org).update(stripe_customer_id=replacement)
    assert outbox.usage_reconcile(include_today=True) == 0
    assert not ReconciliationIssue.objects.exists()


def test_it_reconciles_only_organisations_whose_usage_is_pushed(synced, org, other_org, customer):  # noqa: F811
    """Every organisation that ever opened Checkout has a customer: reconciling those never subscribed
    cost three Stripe calls each a day, enough to hit Stripe's rate limit and skip paying ones."""
    payments.customer_ensure(organisation_id=other_org.pk)  # opened Checkout, never subscribed
    synced.requests.clear()
    outbox.usage_reconcile()
    summaries = [path for method, path in synced.requests if path.endswith("/event_summaries")]
    assert len(summaries) == 3  # the subscribed organisation's three meters only


def _push_failing(synced, org, *, hours_ago):  # noqa: F811
    """A report first attempted `hours_ago`, to which Stripe answered 500 every time (it may have counted
    any of those attempts) until it failed for staff."""
    started = timezone.now() - timedelta(hours=hours_ago)
    ledger(org, 4, at=started - timedelta(minutes=1))
    synced.fail_meter_events = outbox.MAX_ATTEMPTS
    now = started
    assert outbox.usage_push(now=now) == {"retry_later": 1}
    report = UsageReport.objects.get()
    while report.status == "pending":
        now = report.next_attempt_at
        outbox.usage_report_send(report_id=report.pk, now=now)
        report.refresh_from_db()
    assert (report.status, report.maybe_counted, synced.fail_meter_events) == ("failed", True, 0)
    return report


def test_staff_cannot_send_again_a_report_stripe_may_have_counted_over_a_day_ago(admin_client, synced, org, customer):  # noqa: F811
    """Stripe deduplicates an identifier for 24 h only: resending after that could bill the usage twice."""
    report = _push_failing(synced, org, hours_ago=30)
    response = admin_client.post(
        "/admin/billing/usagereport/", {"action": "send_again", "_selected_action": [report.pk]}, follow=True
    )
    assert "0 report(s) will be sent again" in response.content.decode()
    report.refresh_from_db()
    assert report.status == "failed"
    assert "deduplicates an identifier for 24 h only" in report.last_error
    assert outbox.usage_push() == {}
    assert stripe_total(synced, customer) == 0


def test_staff_send_again_within_a_day_a_report_stripe_may_have_counted(synced, org, customer):  # noqa: F811
    report = _push_failing(synced, org, hours_ago=20)
    assert outbox.usage_reports_retry(report_ids=[report.pk]) == 1
    assert outbox.usage_push() == {"sent": 1}
    assert stripe_total(synced, customer) == 4


def test_a_report_stripe_refused_outright_can_be_sent_again_any_day(synced, org, customer):  # noqa: F811
    """A refusal (a customer Stripe does not know) means Stripe counted nothing: resending is safe later too."""
    started = timezone.now() - timedelta(days=3)
    ledger(org, 6, at=started - timedelta(minutes=1))
    gone = synced.objects.pop(customer)
    assert outbox.usage_push(now=started) == {"failed": 1}
    synced.objects[customer] = gone
    report = UsageReport.objects.get()
    assert report.maybe_counted is False
    assert outbox.usage_reports_retry(report_ids=[report.pk]) == 1
    assert outbox.usage_push() == {"sent": 1}
    assert stripe_total(synced, customer) == 6

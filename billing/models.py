"""The usage ledger: one immutable row per authenticated API call (and per billed batch chunk)."""

import limits
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator, RegexValidator
from django.db import models
from django.utils import timezone


class Meter(models.TextChoices):
    ONLINE_PREDICTIONS = "online_predictions", "Online predictions"
    BATCH_ROWS = "batch_rows", "Batch rows"
    BUNDLE_DOWNLOADS = "bundle_downloads", "Bundle downloads"


def validate_rate_limit(value: str) -> None:
    """One limit in the `limits` notation the gateway parses on every call ("60/minute", "10 per second")."""
    try:
        items = limits.parse_many(value)
    except ValueError:
        items = []
    if len(items) != 1 or items[0].amount < 1:
        raise ValidationError(
            "Enter one rate limit as <count>/<second|minute|hour|day>, e.g. 60/minute.", code="invalid_rate_limit"
        )


class UsageRecord(models.Model):
    """A call. `units` are rows predicted (0 for metadata calls and failures); billable if > 0."""

    request_id = models.CharField(max_length=160, unique=True)
    client_request_id = models.CharField(max_length=128, blank=True, default="")
    # Every row costs an insert into each index on the request path: the foreign keys below are served
    # by the (column, created_at) indexes in Meta, so they get none of their own. Nor do they get
    # database constraints: on PostgreSQL each would run a lookup and take a KEY SHARE lock on the
    # parent row (the organisation, the key: the same few rows for every call) inside the INSERT,
    # ~25 % of the row's cost (docs/benchmarks.md). The rows are written from an authenticated key
    # and a resolved version, and `on_delete` is Django's either way (PROTECT refuses to delete an
    # organisation or a version the ledger names; SET_NULL clears a deleted key).
    organisation = models.ForeignKey(
        "apiservice.Organisation", on_delete=models.PROTECT, related_name="+", db_index=False, db_constraint=False
    )
    api_key = models.ForeignKey(
        "apiservice.APIKey",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )
    face = models.CharField(max_length=32)
    meter = models.CharField(max_length=32, choices=Meter.choices, blank=True, default="")
    model_version = models.ForeignKey(
        "models_registry.ModelVersion",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )
    units = models.PositiveIntegerField(default=0)
    status_code = models.PositiveSmallIntegerField()
    latency_ms = models.FloatField(default=0.0)
    created_at = models.DateTimeField(default=timezone.now)
    # Set when the outbox claims the row into a report for Stripe; NULL = not reported yet. Indexed
    # only where set (`usage_report`), so a new row, still NULL here, adds nothing to that index.
    report = models.ForeignKey(
        "billing.UsageReport",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="records",
        db_index=False,
        db_constraint=False,
    )

    class Meta:
        indexes = [
            models.Index(
                fields=["created_at"],
                name="usage_unreported",
                condition=models.Q(report__isnull=True, units__gt=0),
            ),
            models.Index(fields=["organisation", "created_at"], name="usage_org_time"),
            models.Index(fields=["api_key", "created_at"], name="usage_key_time"),
            models.Index(fields=["created_at"], name="usage_time"),
            models.Index(fields=["model_version", "created_at"], name="usage_version_time"),
            models.Index(fields=["report"], name="usage_report", condition=models.Q(report__isnull=False)),
        ]

    def __str__(self) -> str:
        return f"{self.request_id} {self.face} {self.units}u {self.status_code}"

    @property
    def billable(self) -> bool:
        return self.units > 0 and self.status_code < 400


class Plan(models.Model):
    """A price list and its limits. Staff edit prices and limits in the admin; enterprise deals are extra plans."""

    code = models.SlugField(max_length=40, unique=True)
    name = models.CharField(max_length=100)
    # `limits` notation, per API key: "60/minute", "1200/minute".
    rate_limit = models.CharField(max_length=40, default="60/minute", validators=[validate_rate_limit])
    # A hard cap refuses calls beyond each meter's included units (429 quota_exceeded).
    hard_cap = models.BooleanField(default=False)
    # Self-serve plans are offered through Checkout; custom (enterprise) plans are set up by staff.
    self_serve = models.BooleanField(default=False)
    # Stripe's form: a lowercase ISO 4217 code (it answers "usd" for "USD", and a sync that compared the two
    # replaced every price on every run).
    currency = models.CharField(
        max_length=3,
        default="usd",
        validators=[RegexValidator(r"^[a-z]{3}\Z", "A lowercase ISO 4217 code, e.g. usd or eur.")],
    )
    stripe_product_id = models.CharField(max_length=100, blank=True, default="")

    def __str__(self) -> str:
        return self.name


class PlanPrice(models.Model):
    """A plan's terms for one meter: monthly included units and the price of each unit beyond them."""

    plan = models.ForeignKey(Plan, on_delete=models.CASCADE, related_name="prices")
    meter = models.CharField(max_length=32, choices=Meter.choices)
    included_units = models.PositiveBigIntegerField(null=True, blank=True, help_text="Per month; empty = none.")
    # Minor currency units (cents) per unit, exact: 0.05 = $0.50 per 1,000 units.
    unit_amount_decimal = models.DecimalField(
        max_digits=18, decimal_places=9, default=0, validators=[MinValueValidator(0)]
    )
    stripe_price_id = models.CharField(max_length=100, blank=True, default="")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["plan", "meter"], name="uniq_plan_meter")]

    def __str__(self) -> str:
        return f"{self.plan.code}/{self.meter}"

    @property
    def lookup_key(self) -> str:
        return f"mm_{self.plan.code}_{self.meter}"


class BillingMeter(models.Model):
    """Our meter as Stripe knows it (a Billing Meter fed by meter events named `event_name`)."""

    meter = models.CharField(max_length=32, choices=Meter.choices, unique=True)
    event_name = models.CharField(max_length=100, unique=True)
    stripe_meter_id = models.CharField(max_length=100, blank=True, default="")

    def __str__(self) -> str:
        return self.meter


class BillingAccount(models.Model):
    """An organisation's plan and Stripe state. Written only from our API and re-fetched Stripe state."""

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        PAST_DUE = "past_due", "Past due"
        CANCELED = "canceled", "Cancelled"

    organisation = models.OneToOneField(
        "apiservice.Organisation", on_delete=models.CASCADE, related_name="billing_account"
    )
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="+")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    past_due_since = models.DateTimeField(null=True, blank=True)
    stripe_customer_id = models.CharField(max_length=100, blank=True, default="", db_index=True)
    stripe_subscription_id = models.CharField(max_length=100, blank=True, default="", db_index=True)
    subscription_status = models.CharField(max_length=32, blank=True, default="")
    current_period_start = models.DateTimeField(null=True, blank=True)
    current_period_end = models.DateTimeField(null=True, blank=True)
    # Usage from this moment on is pushed to Stripe (the subscription's creation); earlier usage was
    # on the free plan and is never billed. NULL: never subscribed.
    metered_since = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    # A subscription in one of these still bills the meters: a second one would bill every call again.
    SUBSCRIBED_STATUSES = frozenset({"active", "trialing", "past_due", "unpaid", "paused"})

    def __str__(self) -> str:
        return f"{self.organisation_id}: {self.plan_id}"

    @property
    def is_subscribed(self) -> bool:
        """A Stripe subscription bills this organisation now (plan changes go through Stripe's portal)."""
        return bool(self.stripe_subscription_id) and self.subscription_status in self.SUBSCRIBED_STATUSES


class KeyLimit(models.Model):
    """Optional per-key terms: a rate-limit override and a monthly budget of units (all meters)."""

    api_key = models.OneToOneField("apiservice.APIKey", on_delete=models.CASCADE, related_name="billing_limit")
    rate_limit = models.CharField(max_length=40, blank=True, default="", validators=[validate_rate_limit])
    monthly_budget_units = models.PositiveBigIntegerField(null=True, blank=True)

    def __str__(self) -> str:
        return str(self.api_key_id)


class IdempotencyRecord(models.Model):
    """The first response to an `Idempotency-Key`; the unique (organisation, key) decides who ran."""

    # The unique (organisation, key) index serves the foreign key too; no database constraint, for the
    # reason the ledger has none (UsageRecord): the answer is stored in the call's ledger statement.
    organisation = models.ForeignKey(
        "apiservice.Organisation", on_delete=models.CASCADE, related_name="+", db_index=False, db_constraint=False
    )
    key = models.CharField(max_length=255)
    fingerprint = models.CharField(max_length=64)
    done = models.BooleanField(default=False)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    content_type = models.CharField(max_length=100, blank=True, default="")
    body = models.BinaryField(default=b"")
    headers = models.JSONField(default=dict)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["organisation", "key"], name="uniq_idempotency_key")]

    def __str__(self) -> str:
        return f"{self.organisation_id}:{self.key}"


class UsageReport(models.Model):
    """Immutable: ledger rows of one (organisation, meter) claimed together, sent as one meter event.

    The report id is the meter event's `identifier`, so a resend after a crash is deduplicated by Stripe.
    """

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed (staff)"
        OUT_OF_WINDOW = "out_of_window", "Out of Stripe's window (staff)"

    id = models.CharField(primary_key=True, max_length=40)
    organisation = models.ForeignKey("apiservice.Organisation", on_delete=models.PROTECT, related_name="+")
    meter = models.CharField(max_length=32, choices=Meter.choices)
    stripe_customer_id = models.CharField(max_length=100)
    units = models.PositiveBigIntegerField()
    rows = models.PositiveIntegerField()
    first_at = models.DateTimeField()
    last_at = models.DateTimeField()
    event_timestamp = models.DateTimeField()
    created_at = models.DateTimeField(default=timezone.now)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    # Times staff sent a failed report again: each resend has its own idempotency key (Stripe replays a
    # key's first answer, the refusal too, for 24 h); the identifier stays the report id.
    resends = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    # Stripe deduplicates a meter event's identifier for 24 h only: a report that Stripe may have counted
    # (an attempt ended without a clear answer) is not sent again once its first attempt is older.
    first_attempt_at = models.DateTimeField(null=True, blank=True)
    maybe_counted = models.BooleanField(default=False)

    class Meta:
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="report_due")]

    def __str__(self) -> str:
        return self.id


class ReconciliationIssue(models.Model):
    """A (customer, meter, day) where our sent total and Stripe's meter event summary disagree."""

    organisation = models.ForeignKey("apiservice.Organisation", on_delete=models.PROTECT, related_name="+")
    meter = models.CharField(max_length=32, choices=Meter.choices)
    day = models.DateField()
    ours = models.BigIntegerField()
    stripe = models.BigIntegerField()
    created_at = models.DateTimeField(default=timezone.now)
    resolved = models.BooleanField(default=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["organisation", "meter", "day"], name="uniq_reconciliation_issue")
        ]

    def __str__(self) -> str:
        return f"{self.organisation_id}/{self.meter}/{self.day}"


class StripeEvent(models.Model):
    """Every webhook event we accepted, once (unique id), with what handling it did."""

    event_id = models.CharField(max_length=100, unique=True)
    type = models.CharField(max_length=100)
    payload = models.JSONField()
    received_at = models.DateTimeField(default=timezone.now)
    processed_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=32, blank=True, default="")
    detail = models.TextField(blank=True, default="")

    def __str__(self) -> str:
        return self.event_id

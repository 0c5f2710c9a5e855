"""Invitations to an organisation, and the daily usage rollup behind the dashboards."""

from django.conf import settings
from django.db import models
from django.utils import timezone

from apiservice.models import Membership


class Invitation(models.Model):
    """An emailed invitation to join an organisation. Only a hash of the link's token is stored."""

    organisation = models.ForeignKey("apiservice.Organisation", on_delete=models.CASCADE, related_name="invitations")
    email = models.EmailField()
    role = models.CharField(max_length=10, choices=Membership.Role.choices, default=Membership.Role.MEMBER)
    token_hash = models.CharField(max_length=64, unique=True)
    invited_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)
    accepted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["organisation", "-created_at"], name="invitation_org_created")]

    def __str__(self) -> str:
        return f"{self.email} to {self.organisation_id} ({self.role})"

    @property
    def status(self) -> str:
        if self.accepted_at:
            return "accepted"
        if self.revoked_at:
            return "revoked"
        if self.expires_at <= timezone.now():
            return "expired"
        return "pending"


class UsageRollup(models.Model):
    """One UTC day of the ledger for one (organisation, model version, meter).

    Written only by `services.usage_rollup_day` (delete + insert of a whole day, so re-running is
    idempotent). `latency_hist` is a sparse log-scale histogram {bucket: calls}; see `latency.py`.
    """

    day = models.DateField()
    organisation = models.ForeignKey("apiservice.Organisation", on_delete=models.CASCADE, related_name="+")
    model_version = models.ForeignKey(
        "models_registry.ModelVersion", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    meter = models.CharField(max_length=32, blank=True, default="")
    calls = models.PositiveIntegerField(default=0)
    units = models.PositiveBigIntegerField(default=0)
    errors = models.PositiveIntegerField(default=0)
    latency_sum_ms = models.FloatField(default=0.0)
    latency_hist = models.JSONField(default=dict)

    class Meta:
        indexes = [
            models.Index(fields=["day"], name="rollup_day"),
            models.Index(fields=["organisation", "day"], name="rollup_org_day"),
        ]

    def __str__(self) -> str:
        return f"{self.day} org {self.organisation_id} version {self.model_version_id} {self.meter}"


class LatencyRollup(models.Model):
    """One UTC day's latency histogram of one model version across all organisations (staff views).

    Kept apart from UsageRollup so the all-organisations dashboards merge a few hundred histograms,
    not one per (organisation, version, meter).
    """

    day = models.DateField()
    model_version = models.ForeignKey(
        "models_registry.ModelVersion", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    calls = models.PositiveIntegerField(default=0)
    latency_hist = models.JSONField(default=dict)

    class Meta:
        indexes = [models.Index(fields=["day"], name="latency_rollup_day")]

    def __str__(self) -> str:
        return f"{self.day} version {self.model_version_id}"


class UsageRollupCursor(models.Model):
    """A single row: every UTC day before `rolled_through` is in `UsageRollup`; later days are read live."""

    rolled_through = models.DateField()
    updated_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"rolled up through {self.rolled_through}"

"""The usage ledger: one immutable row per authenticated API call (and per billed batch chunk)."""

from django.db import models
from django.utils import timezone


class Meter(models.TextChoices):
    ONLINE_PREDICTIONS = "online_predictions", "Online predictions"
    BATCH_ROWS = "batch_rows", "Batch rows"
    BUNDLE_DOWNLOADS = "bundle_downloads", "Bundle downloads"


class UsageRecord(models.Model):
    """A call. `units` are rows predicted (0 for metadata calls and failures); billable if > 0."""

    request_id = models.CharField(max_length=160, unique=True)
    client_request_id = models.CharField(max_length=128, blank=True, default="")
    organisation = models.ForeignKey("apiservice.Organisation", on_delete=models.PROTECT, related_name="+")
    api_key = models.ForeignKey("apiservice.APIKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    face = models.CharField(max_length=32)
    meter = models.CharField(max_length=32, choices=Meter.choices, blank=True, default="")
    model_version = models.ForeignKey(
        "models_registry.ModelVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    units = models.PositiveIntegerField(default=0)
    status_code = models.PositiveSmallIntegerField()
    latency_ms = models.FloatField(default=0.0)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [
            models.Index(fields=["organisation", "created_at"], name="usage_org_time"),
            models.Index(fields=["created_at"], name="usage_time"),
            models.Index(fields=["model_version", "created_at"], name="usage_version_time"),
        ]

    def __str__(self) -> str:
        return f"{self.request_id} {self.face} {self.units}u {self.status_code}"

    @property
    def billable(self) -> bool:
        return self.units > 0 and self.status_code < 400

"""Files and batch jobs (OpenAI Batch style), their chunks and their webhook deliveries.

Public ids are opaque strings (`file-…`, `batch_…`); the integer primary key gives lists a stable,
newest-first order for cursor pagination.
"""

import secrets

from django.db import models
from django.db.models import Q
from django.utils import timezone


def _file_id() -> str:
    return "file-" + secrets.token_hex(12)


def _batch_id() -> str:
    return "batch_" + secrets.token_hex(12)


class File(models.Model):
    """An uploaded input file, or an output/error file a batch produced."""

    class Purpose(models.TextChoices):
        BATCH = "batch", "Batch input"
        BATCH_OUTPUT = "batch_output", "Batch output"

    class Format(models.TextChoices):
        JSONL = "jsonl", "JSON Lines"
        CSV = "csv", "CSV"

    uid = models.CharField(max_length=40, unique=True, default=_file_id, editable=False)
    organisation = models.ForeignKey("apiservice.Organisation", on_delete=models.CASCADE, related_name="+")
    purpose = models.CharField(max_length=16, choices=Purpose.choices)
    filename = models.CharField(max_length=255)
    format = models.CharField(max_length=8, choices=Format.choices)
    bytes = models.PositiveBigIntegerField(default=0)
    storage_name = models.CharField(max_length=300)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["organisation", "-id"], name="file_org_newest")]

    def __str__(self) -> str:
        return self.uid


class Batch(models.Model):
    class Status(models.TextChoices):
        VALIDATING = "validating"
        FAILED = "failed"
        IN_PROGRESS = "in_progress"
        FINALIZING = "finalizing"
        COMPLETED = "completed"
        EXPIRED = "expired"
        CANCELLING = "cancelling"
        CANCELLED = "cancelled"

    ACTIVE = (Status.VALIDATING, Status.IN_PROGRESS, Status.FINALIZING)
    TERMINAL = (Status.FAILED, Status.COMPLETED, Status.EXPIRED, Status.CANCELLED)

    uid = models.CharField(max_length=40, unique=True, default=_batch_id, editable=False)
    organisation = models.ForeignKey("apiservice.Organisation", on_delete=models.CASCADE, related_name="+")
    api_key = models.ForeignKey("apiservice.APIKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    input_file = models.ForeignKey(File, null=True, on_delete=models.SET_NULL, related_name="+")
    model_version = models.ForeignKey("models_registry.ModelVersion", on_delete=models.PROTECT, related_name="+")
    output_format = models.CharField(max_length=8, choices=File.Format.choices, default=File.Format.JSONL)
    metadata = models.JSONField(null=True, blank=True)
    completion_window = models.CharField(max_length=16, default="24h")
    webhook_url = models.URLField(max_length=2000, blank=True, default="")
    # NULL (not "") when absent, so the unique (organisation, key) constraint ignores keyless batches.
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001
    request_hash = models.CharField(max_length=64, blank=True, default="")

    status = models.CharField(max_length=12, choices=Status.choices, default=Status.VALIDATING)
    errors = models.JSONField(default=list, blank=True)
    total = models.PositiveIntegerField(default=0)
    completed = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    rows_total = models.PositiveBigIntegerField(default=0)
    rows_done = models.PositiveBigIntegerField(default=0)
    chunks_total = models.PositiveIntegerField(default=0)
    chunks_done = models.PositiveIntegerField(default=0)
    output_file = models.ForeignKey(File, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    error_file = models.ForeignKey(File, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    validation_errors_name = models.CharField(max_length=300, blank=True, default="")

    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    in_progress_at = models.DateTimeField(null=True, blank=True)
    finalizing_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    failed_at = models.DateTimeField(null=True, blank=True)
    expired_at = models.DateTimeField(null=True, blank=True)
    cancelling_at = models.DateTimeField(null=True, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)
    finalized_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "batches"
        indexes = [
            models.Index(fields=["organisation", "-id"], name="batch_org_newest"),
            models.Index(fields=["status", "expires_at"], name="batch_status_expiry"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["organisation", "idempotency_key"],
                condition=Q(idempotency_key__isnull=False),
                name="uniq_batch_idempotency_key",
            )
        ]

    def __str__(self) -> str:
        return self.uid


class BatchPart(models.Model):
    """A byte range of the input file that one task validates; a file's parts are validated in parallel.

    `result` holds what the part found, its line numbers counted from its own start (see validation.py).
    """

    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        DONE = "done"

    batch = models.ForeignKey(Batch, on_delete=models.CASCADE, related_name="parts")
    index = models.PositiveIntegerField()
    byte_offset = models.PositiveBigIntegerField()
    byte_length = models.PositiveBigIntegerField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    claim = models.CharField(max_length=32, blank=True, default="")
    started_at = models.DateTimeField(null=True, blank=True)
    result = models.JSONField(default=dict, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["batch", "index"], name="uniq_batch_part")]
        indexes = [models.Index(fields=["batch", "status"], name="part_batch_status")]

    def __str__(self) -> str:
        return f"{self.batch_id}/{self.index}"


class BatchChunk(models.Model):
    """A byte range of the input file holding at most `BATCH_CHUNK_ROWS` rows; one Celery task each."""

    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"  # poison: every line in it failed, the model was not run again
        SKIPPED = "skipped"  # cancelled or expired before it ran

    DONE = (Status.SUCCEEDED, Status.FAILED, Status.SKIPPED)

    batch = models.ForeignKey(Batch, on_delete=models.CASCADE, related_name="chunks")
    index = models.PositiveIntegerField()
    first_line = models.PositiveIntegerField()
    byte_offset = models.PositiveBigIntegerField()
    byte_length = models.PositiveBigIntegerField()
    lines = models.PositiveIntegerField()
    rows = models.PositiveIntegerField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    claim = models.CharField(max_length=32, blank=True, default="")
    succeeded_lines = models.PositiveIntegerField(default=0)
    failed_lines = models.PositiveIntegerField(default=0)
    succeeded_rows = models.PositiveIntegerField(default=0)
    output_name = models.CharField(max_length=300, blank=True, default="")
    error_name = models.CharField(max_length=300, blank=True, default="")
    # The chunk's requests as parsed by validation (.npy arrays: ids, then feeds); empty: parse the lines again.
    tensors_name = models.CharField(max_length=300, blank=True, default="")
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["batch", "index"], name="uniq_batch_chunk")]
        indexes = [models.Index(fields=["batch", "status"], name="chunk_batch_status")]

    def __str__(self) -> str:
        return f"{self.batch_id}#{self.index}"


class WebhookDelivery(models.Model):
    """One event for one URL. The message id stays the same across retries (Standard Webhooks)."""

    class Status(models.TextChoices):
        PENDING = "pending"
        DELIVERED = "delivered"
        FAILED = "failed"

    batch = models.ForeignKey(Batch, on_delete=models.CASCADE, related_name="webhook_deliveries")
    event = models.CharField(max_length=32)
    message_id = models.CharField(max_length=40, unique=True)
    url = models.URLField(max_length=2000)
    payload = models.JSONField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    delivered_at = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "webhook deliveries"
        constraints = [models.UniqueConstraint(fields=["batch", "event"], name="uniq_batch_event_delivery")]

    def __str__(self) -> str:
        return f"{self.event} {self.message_id}"


class WebhookAttempt(models.Model):
    """The delivery log: one row per HTTP attempt."""

    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_log")
    number = models.PositiveSmallIntegerField()
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.CharField(max_length=500, blank=True, default="")
    duration_ms = models.FloatField(default=0.0)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"attempt {self.number} of {self.delivery_id}"

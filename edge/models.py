"""Edge bundles: a signed zip per (model version, requested variants), built once by a Celery task."""

import secrets

from django.db import models
from django.utils import timezone

VARIANTS = ("fp32", "int8", "ort")


def new_public_id() -> str:
    return "bnd_" + secrets.token_hex(12)


def bundle_upload_to(instance: "Bundle", filename: str) -> str:
    return f"bundles/{instance.public_id}.zip"


class Bundle(models.Model):
    """One build of one version. `report` says, per variant, whether it was published and why not."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        BUILDING = "building", "Building"
        READY = "ready", "Ready"
        FAILED = "failed", "Failed"

    public_id = models.CharField(max_length=40, unique=True, default=new_public_id, editable=False)
    model_version = models.ForeignKey("models_registry.ModelVersion", on_delete=models.CASCADE, related_name="bundles")
    # The requested variants, sorted and comma-joined: the cache key with the version.
    variants_key = models.CharField(max_length=40)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    progress = models.PositiveSmallIntegerField(default=0)
    reason = models.TextField(blank=True, default="")
    file = models.FileField(upload_to=bundle_upload_to, max_length=300, blank=True)
    size_bytes = models.PositiveBigIntegerField(default=0)
    sha256 = models.CharField(max_length=64, blank=True, default="")
    key_id = models.CharField(max_length=40, blank=True, default="")
    manifest = models.JSONField(null=True, blank=True)
    # Per variant: published, rejected (parity gate), skipped (not applicable) or not_requested, with the
    # reason; set when a build ends, ready or failed (a failed bundle has no manifest to read it from).
    report = models.JSONField(default=dict, blank=True)
    build_seconds = models.FloatField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(fields=["model_version", "variants_key"], name="uniq_bundle_version_variants")
        ]

    def __str__(self) -> str:
        return self.public_id

    @property
    def variants(self) -> list[str]:
        return self.variants_key.split(",") if self.variants_key else []

    @property
    def etag(self) -> str:
        """A strong validator: the zip's SHA-256 (the bytes never change once ready)."""
        return f'"{self.sha256}"'


class DownloadURL(models.Model):
    """One signed download URL. Its token carries only the bundle's public id and this row's nonce (signed,
    not encrypted: anyone holding the URL can read it); who asked for it, the organisation and the API key
    its download is billed to, stays here on the server."""

    nonce = models.CharField(max_length=32, unique=True)
    bundle = models.ForeignKey(Bundle, on_delete=models.CASCADE, related_name="+")
    organisation = models.ForeignKey("apiservice.Organisation", on_delete=models.CASCADE, related_name="+")
    # NULL for a portal session (no key), or once the key is deleted (the ledger row then has none either).
    api_key = models.ForeignKey("apiservice.APIKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        verbose_name = "download URL"

    def __str__(self) -> str:
        return f"dl_{self.nonce}"

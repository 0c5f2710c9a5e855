"""Tenants, their members and their API keys."""

import secrets
from datetime import datetime
from typing import ClassVar

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.crypto import get_random_string
from rest_framework_api_key.crypto import KeyGenerator
from rest_framework_api_key.models import AbstractAPIKey, BaseAPIKeyManager

KEY_PREFIX = "mm_"


class Scope(models.TextChoices):
    PREDICT = "predict", "Online predictions"
    BATCH = "batch", "Batch jobs and files"
    BUNDLES = "bundles", "Edge bundles"
    USAGE = "usage", "Usage and billing"


ALL_SCOPES = [scope.value for scope in Scope]


def _new_webhook_secret() -> str:
    """A Standard Webhooks secret ("whsec_" + base64), encrypted for storage."""
    import base64

    from .encryption import encrypt

    return encrypt("whsec_" + base64.b64encode(secrets.token_bytes(24)).decode())


class Organisation(models.Model):
    """A tenant: owns private models, API keys, usage and (with billing) a Stripe customer."""

    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=60, unique=True)
    # Encrypted at rest (apiservice.encryption): we must read it back to sign webhooks.
    webhook_secret = models.CharField(max_length=255, default=_new_webhook_secret, editable=False)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.name

    @property
    def webhook_signing_secret(self) -> str:
        """The plaintext `whsec_...` secret that signs this organisation's webhooks."""
        from .encryption import decrypt

        return decrypt(self.webhook_secret)


class Membership(models.Model):
    class Role(models.TextChoices):
        OWNER = "owner", "Owner"
        MEMBER = "member", "Member"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "organisation"], name="uniq_membership")]

    def __str__(self) -> str:
        return f"{self.user} in {self.organisation} ({self.role})"


class PrefixedKeyGenerator(KeyGenerator):
    """Keys look like `mm_<8 chars>.<32 chars>`: scannable prefix, ~190 random bits of secret."""

    def get_prefix(self) -> str:
        return KEY_PREFIX + get_random_string(self.prefix_length)


class APIKeyManager(BaseAPIKeyManager):
    key_generator = PrefixedKeyGenerator(prefix_length=8, secret_key_length=32)

    def active(self) -> "models.QuerySet[APIKey]":
        """Keys that work now: not revoked, and not past their expiry (as `has_expired` reads it)."""
        unexpired = models.Q(expiry_date__isnull=True) | models.Q(expiry_date__gte=timezone.now())
        return self.get_usable_keys().filter(unexpired)


class APIKey(AbstractAPIKey):
    """An organisation's API key. Only the SHA-512 hash of the secret is stored."""

    objects: ClassVar[APIKeyManager] = APIKeyManager()  # type: ignore[assignment]

    prefix = models.CharField(max_length=16, unique=True, editable=False)
    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="api_keys")
    scopes = models.JSONField(default=list)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta(AbstractAPIKey.Meta):
        verbose_name = "API key"
        verbose_name_plural = "API keys"
        indexes = [models.Index(fields=["organisation", "-created"], name="apikey_org_created")]

    @property
    def expires_at(self) -> datetime | None:
        return self.expiry_date

    @property
    def status(self) -> str:
        if self.revoked:
            return "revoked"
        if self.has_expired:
            return "expired"
        return "active"

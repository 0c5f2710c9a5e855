"""System checks for the batch settings (misconfiguration fails at start, not mid-job)."""

import ipaddress
from typing import Any

from django.conf import settings
from django.core.checks import Error, register


@register()
def check_batch_settings(app_configs: Any, **kwargs: Any) -> list[Error]:
    errors = []
    if not 0.0 <= settings.BATCH_MAX_ERROR_RATE <= 1.0:
        errors.append(Error("BATCH_MAX_ERROR_RATE must be between 0 and 1.", id="batches.E001"))
    counts = ("BATCH_CHUNK_ROWS", "BATCH_SUB_BATCH_ROWS", "BATCH_CHUNK_MAX_ATTEMPTS", "BATCH_VALIDATION_PART_BYTES")
    if any(getattr(settings, name) < 1 for name in counts):
        errors.append(Error(f"{', '.join(counts[:-1])} and {counts[-1]} must be >= 1.", id="batches.E002"))
    for entry in settings.WEBHOOK_ALLOWED_NETWORKS:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            errors.append(Error(f"WEBHOOK_ALLOWED_NETWORKS: '{entry}' is not an IP network.", id="batches.E003"))
    return errors

"""System checks for the edge signing key: a configured key that cannot sign fails at start-up."""

from typing import Any

from django.conf import settings
from django.core.checks import Error, Warning, register
from django.core.exceptions import ImproperlyConfigured


@register()
def check_signing_key(app_configs: Any, **kwargs: Any) -> list[Error]:
    if not (settings.EDGE_SIGNING_KEY or settings.EDGE_SIGNING_KEY_FILE):
        return []  # development: a key is generated under VAR_DIR on first use
    from .keys import public_keys

    try:
        public_keys()
    except (ImproperlyConfigured, ValueError) as exc:
        return [Error(f"The edge signing key cannot be used: {exc}", id="edge.E001")]
    return []


@register(deploy=True)
def check_production_signing_key(app_configs: Any, **kwargs: Any) -> list[Warning]:
    if settings.EDGE_SIGNING_KEY or settings.EDGE_SIGNING_KEY_FILE:
        return []
    return [
        Warning(
            "No EDGE_SIGNING_KEY or EDGE_SIGNING_KEY_FILE: each host signs bundles with a development key "
            "generated in its var/ folder, which devices cannot verify against another host's /v1/edge/keys.",
            hint="openssl genpkey -algorithm ed25519 -out edge-signing-key.pem; set EDGE_SIGNING_KEY_FILE to it.",
            id="edge.W001",
        )
    ]

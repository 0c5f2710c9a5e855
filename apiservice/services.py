"""Writes for organisations, memberships and API keys."""

from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from .auth import key_cache
from .errors import InvalidInput
from .models import ALL_SCOPES, APIKey, Membership, Organisation


def organisation_get_or_create(*, name: str, slug: str | None = None) -> Organisation:
    organisation, _ = Organisation.objects.get_or_create(slug=slug or slugify(name)[:60], defaults={"name": name})
    return organisation


def membership_ensure(*, user: Any, organisation: Organisation, role: str = Membership.Role.MEMBER) -> Membership:
    membership, _ = Membership.objects.get_or_create(user=user, organisation=organisation, defaults={"role": role})
    return membership


def api_key_create(
    *,
    organisation: Organisation,
    name: str,
    scopes: list[str] | None = None,
    expires_at: datetime | None = None,
    created_by: Any = None,
    **extra: Any,
) -> tuple[APIKey, str]:
    """Create a key; returns it and the secret, which is never stored and cannot be shown again."""
    scopes = list(ALL_SCOPES if scopes is None else scopes)
    unknown = sorted(set(scopes) - set(ALL_SCOPES))
    if unknown:
        raise InvalidInput(f"Unknown scopes: {', '.join(unknown)}.", param="scopes")
    api_key, secret = APIKey.objects.create_key(
        organisation=organisation,
        name=name[:50],
        scopes=scopes,
        expiry_date=expires_at,
        created_by=created_by if getattr(created_by, "pk", None) else None,
        **extra,
    )
    assert isinstance(api_key, APIKey)
    return api_key, secret


def api_key_revoke(*, api_key: APIKey) -> APIKey:
    """Revoke for good. This process forgets the key now; others within API_KEY_CACHE_SECONDS (<= 1 s)."""
    with transaction.atomic():
        APIKey.objects.filter(pk=api_key.pk, revoked=False).update(revoked=True, revoked_at=timezone.now())
    key_cache.clear()
    api_key.refresh_from_db()
    return api_key

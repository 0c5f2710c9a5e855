"""API-key authentication: `Authorization: Bearer mm_...`.

The key is resolved once per request by `APIGatewayMiddleware` (so the usage ledger knows who called
even when the view fails) and handed to DRF through `APIKeyAuthentication`. Lookups are cached in the
process for at most `API_KEY_CACHE_SECONDS` (<= 1 s), which bounds how long a revoked key keeps working.
"""

import re
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Q
from django.http import HttpRequest
from django.utils import timezone
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from .models import APIKey

KEY_PATTERN = re.compile(r"^mm_[A-Za-z0-9]{8}\.[A-Za-z0-9]{32}$")
WWW_AUTHENTICATE = 'Bearer realm="modelmeter"'
NO_KEY = "Send your API key as 'Authorization: Bearer <key>'."


def scope_missing(scope: str) -> str:
    return f"This API key lacks the '{scope}' scope."


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's id, its organisation and what it may do."""

    api_key_id: str
    prefix: str
    organisation_id: int
    scopes: frozenset[str]
    expires_at: datetime | None
    monthly_budget_units: int | None = None

    @property
    def is_authenticated(self) -> bool:  # lets DRF treat the principal as a user
        return True

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes


class AuthError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class _KeyCache:
    """Process-local TTL cache of key lookups, keyed by the full presented key."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[float, Principal | None]] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> tuple[bool, Principal | None]:
        entry = self._entries.get(key)
        if entry is None or entry[0] < time.monotonic():
            return False, None
        return True, entry[1]

    def put(self, key: str, principal: Principal | None) -> None:
        ttl = min(settings.API_KEY_CACHE_SECONDS, 1.0)
        with self._lock:
            if len(self._entries) > 10_000:
                self._entries.clear()
            self._entries[key] = (time.monotonic() + ttl, principal)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


key_cache = _KeyCache()


def parse_authorization(header: str) -> str:
    scheme, _, credentials = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not credentials:
        raise AuthError(NO_KEY)
    key = credentials.strip()
    if not KEY_PATTERN.match(key):
        raise AuthError("Malformed API key.")
    return key


def _load_principal(key: str) -> Principal | None:
    prefix = key.partition(".")[0]
    api_key = (
        APIKey.objects.filter(prefix=prefix, revoked=False)
        .only("id", "prefix", "hashed_key", "organisation_id", "scopes", "expiry_date", "last_used_at")
        .first()
    )
    if api_key is None or not APIKey.objects.key_generator.verify(key, api_key.hashed_key):
        return None
    _touch_last_used(api_key)
    return Principal(
        api_key_id=api_key.pk,
        prefix=api_key.prefix,
        organisation_id=api_key.organisation_id,
        scopes=frozenset(api_key.scopes),
        expires_at=api_key.expiry_date,
        monthly_budget_units=getattr(api_key, "monthly_budget_units", None),
    )


def _touch_last_used(api_key: APIKey) -> None:
    """Write last_used_at at most once per resolution window: one conditional UPDATE, no read."""
    now = timezone.now()
    stale = now - timedelta(seconds=settings.API_KEY_LAST_USED_RESOLUTION_SECONDS)
    if api_key.last_used_at is None or api_key.last_used_at < stale:
        APIKey.objects.filter(pk=api_key.pk).filter(Q(last_used_at__isnull=True) | Q(last_used_at__lt=stale)).update(
            last_used_at=now
        )


def authenticate_key(header: str) -> Principal:
    """Resolve an Authorization header to a principal, or raise AuthError (-> 401)."""
    key = parse_authorization(header)
    hit, principal = key_cache.get(key)
    if not hit:
        principal = _load_principal(key)
        key_cache.put(key, principal)
    if principal is None:
        raise AuthError("Invalid or revoked API key.")
    if principal.expires_at is not None and principal.expires_at <= timezone.now():
        raise AuthError("This API key has expired.")
    return principal


def request_principal(request: HttpRequest | Request) -> Principal | None:
    raw = request._request if isinstance(request, Request) else request
    return getattr(raw, "principal", None)


class APIKeyAuthentication(BaseAuthentication):
    """DRF side of key auth: the middleware did the lookup; this turns its verdict into 401s."""

    def authenticate(self, request: Request) -> tuple[Any, Principal] | None:
        raw = request._request
        error = getattr(raw, "auth_error", None)
        if error is not None:
            raise exceptions.AuthenticationFailed(error)
        principal = getattr(raw, "principal", None)
        if principal is None:
            return None
        return principal, principal

    def authenticate_header(self, request: Request) -> str:
        return WWW_AUTHENTICATE


class HasAPIKey(BasePermission):
    """Deny by default: a valid key is needed, and the view's `required_scope` if it names one."""

    message = "This API key lacks the scope this endpoint needs."

    def has_permission(self, request: Request, view: Any) -> bool:
        principal = request.auth
        if not isinstance(principal, Principal):
            raise exceptions.NotAuthenticated(NO_KEY)
        scope = getattr(view, "required_scope", None)
        if scope and not principal.has_scope(scope):
            self.message = scope_missing(scope)
            return False
        return True


def access_refusal(request: HttpRequest, *, scope: str) -> exceptions.APIException | None:
    """What `APIKeyAuthentication` + `HasAPIKey` refuse, for a call served outside DRF (the gateway's
    fast routes): the same exceptions, so the same envelope, status and `WWW-Authenticate`."""
    error = getattr(request, "auth_error", None)
    if error is not None:
        return exceptions.AuthenticationFailed(error)
    principal = getattr(request, "principal", None)
    if principal is None:
        return exceptions.NotAuthenticated(NO_KEY)
    if not principal.has_scope(scope):
        return exceptions.PermissionDenied(scope_missing(scope))
    return None


class IsStaffUser(BasePermission):
    """Staff-only endpoints: a Django staff session (admin login), not an API key."""

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request._request.user if hasattr(request._request, "user") else None
        return bool(user is not None and user.is_authenticated and user.is_staff)

"""Batch webhooks: Standard Webhooks signing, an SSRF guard, and logged deliveries with backoff.

The URL is checked when the batch is created and again at every attempt, and the connection goes to
the address that was checked (a DNS answer that changes between check and connect cannot redirect it).
Redirects are not followed.
"""

import base64
import hashlib
import hmac
import http.client
import ipaddress
import socket
import ssl
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

import orjson
from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from apiservice.errors import InvalidInput
from apiservice.models import Organisation

from .models import Batch, WebhookAttempt, WebhookDelivery

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# Cloud metadata endpoints (most are link-local already; listed so an allow-list never admits them).
METADATA_ADDRESSES = {
    ipaddress.ip_address(a) for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200")
}


class UnsafeURL(Exception):
    pass


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str
    address: str


NAT64 = ipaddress.ip_network("64:ff9b::/96")  # the well-known prefix: the last 32 bits are an IPv4 address


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, 6to4, NAT64), which is where it would reach."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _allowed(address: IPAddress) -> bool:
    embedded = _embedded_ipv4(address)
    if embedded is not None and not _allowed(embedded):
        return False
    if address in METADATA_ADDRESSES:
        return False
    for entry in settings.WEBHOOK_ALLOWED_NETWORKS:
        if address in ipaddress.ip_network(entry, strict=False):
            return True
    return address.is_global and not address.is_multicast


def webhook_target(url: str) -> Target:
    """Resolve a webhook URL; refuse it unless every address it resolves to is public (or allowed)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UnsafeURL("The webhook URL must be an absolute http(s) URL.")
    if parts.username or parts.password:
        raise UnsafeURL("The webhook URL must not carry credentials.")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:  # urlsplit: a port past 65535 or not a number
        raise UnsafeURL("The webhook URL has an invalid port.") from None
    try:
        infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise UnsafeURL(f"The webhook host '{parts.hostname}' does not resolve.") from None
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    refused = [a for a in addresses if not _allowed(a)]
    if not addresses or refused:
        raise UnsafeURL(
            f"The webhook host '{parts.hostname}' resolves to a non-public address "
            f"({refused[0] if refused else 'none'})."
        )
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(scheme=parts.scheme, host=parts.hostname, port=port, path=path, address=str(addresses[0]))


def webhook_url_check(*, url: str) -> None:
    try:
        webhook_target(url)
    except UnsafeURL as exc:
        raise InvalidInput(str(exc), code="webhook_url_refused", param="webhook_url") from None


# --- Signing (https://www.standardwebhooks.com) ----------------------------------------------------


def webhook_sign(*, secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64 HMAC-SHA256 of "id.timestamp.body">` with the base64 secret after `whsec_`."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


# --- Deliveries -----------------------------------------------------------------------------------


def webhook_queue(*, batch: Batch, event: str) -> None:
    """Record the event for the batch's webhook (once per event) and send it after commit."""
    if not batch.webhook_url:
        return
    from .selectors import batch_data

    payload = {"type": event, "timestamp": timezone.now().isoformat(), "data": batch_data(batch=batch)}
    delivery, created = WebhookDelivery.objects.get_or_create(
        batch=batch,
        event=event,
        defaults={
            "message_id": "msg_" + uuid.uuid4().hex,
            "url": batch.webhook_url,
            "payload": orjson.loads(orjson.dumps(payload, default=str)),
        },
    )
    if created:
        from .tasks import webhook_deliver

        transaction.on_commit(lambda: webhook_deliver.delay(delivery.pk))


class _PinnedHTTPS(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


def _post(target: Target, headers: dict[str, str], body: bytes) -> int:
    timeout = settings.WEBHOOK_TIMEOUT_SECONDS
    connection: http.client.HTTPConnection
    if target.scheme == "https":
        connection = _PinnedHTTPS(target.host, target.port, target.address, timeout)
    else:
        connection = http.client.HTTPConnection(target.address, target.port, timeout=timeout)
    try:
        name = f"[{target.host}]" if ":" in target.host else target.host  # an IPv6 literal is bracketed
        host = name if target.port in (80, 443) else f"{name}:{target.port}"
        connection.request("POST", target.path, body=body, headers={**headers, "Host": host})
        response = connection.getresponse()
        response.read(64 * 1024)
        return response.status
    finally:
        connection.close()


def webhook_attempt(*, delivery_id: int) -> float | None:
    """One attempt at a delivery, logged. Returns the seconds to wait before the next one, or None."""
    number = WebhookDelivery.objects.filter(pk=delivery_id, status=WebhookDelivery.Status.PENDING).update(
        attempts=F("attempts") + 1
    )
    if not number:
        return None
    delivery = WebhookDelivery.objects.select_related("batch").get(pk=delivery_id)
    secret = Organisation.objects.get(pk=delivery.batch.organisation_id).webhook_signing_secret
    body = orjson.dumps(delivery.payload)
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "ModelMeter-Webhooks/1",
        "webhook-id": delivery.message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": webhook_sign(
            secret=secret, message_id=delivery.message_id, timestamp=timestamp, body=body
        ),
    }
    started = time.perf_counter()
    status_code, error = None, ""
    try:
        status_code = _post(webhook_target(delivery.url), headers, body)
        if not 200 <= status_code < 300:
            error = f"HTTP {status_code}"
    except UnsafeURL as exc:
        error = f"refused: {exc}"
    except (OSError, http.client.HTTPException) as exc:
        error = f"{type(exc).__name__}: {exc}"[:500]
    return _record(delivery, status_code, error, (time.perf_counter() - started) * 1000.0)


def _record(delivery: WebhookDelivery, status_code: int | None, error: str, duration_ms: float) -> float | None:
    WebhookAttempt.objects.create(
        delivery=delivery, number=delivery.attempts, status_code=status_code, error=error, duration_ms=duration_ms
    )
    now = timezone.now()
    if not error:
        WebhookDelivery.objects.filter(pk=delivery.pk).update(
            status=WebhookDelivery.Status.DELIVERED,
            delivered_at=now,
            last_status_code=status_code,
            last_error="",
            next_attempt_at=None,
        )
        return None
    final = delivery.attempts >= settings.WEBHOOK_MAX_ATTEMPTS or error.startswith("refused")
    delay = None if final else settings.WEBHOOK_BACKOFF_SECONDS * 2 ** (delivery.attempts - 1)
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        status=WebhookDelivery.Status.FAILED if final else WebhookDelivery.Status.PENDING,
        last_status_code=status_code,
        last_error=error,
        next_attempt_at=None if delay is None else now + timedelta(seconds=delay),
    )
    return delay

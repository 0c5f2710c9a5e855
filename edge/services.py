"""Writes for edge bundles: request (cached per version and variants), build, rebuild, downloads."""

import logging
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core import signing
from django.core.files.base import ContentFile
from django.db import OperationalError, transaction
from django.db.models import F, Q
from django.utils import timezone

from apiservice.auth import Principal
from apiservice.errors import APIError, Conflict, InvalidInput
from apiservice.models import APIKey
from billing import limits
from billing.gateway import payment_required, quota_exceeded
from billing.models import Meter, UsageRecord
from billing.services import usage_record_once
from models_registry.models import ModelVersion

from . import builder, packaging, selectors
from .models import VARIANTS, Bundle, DownloadURL

logger = logging.getLogger(__name__)

DOWNLOAD_SALT = "edge.bundle-download"
DOWNLOAD_FACE = "bundle-download"


def variants_normalise(variants: list[str] | None) -> str:
    """The cache key: requested variants in canonical order (all of them when none are named)."""
    chosen = variants if variants else list(VARIANTS)
    unknown = sorted(set(chosen) - set(VARIANTS))
    if unknown:
        raise InvalidInput(
            f"Unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}.", param="variants"
        )
    return ",".join(name for name in VARIANTS if name in chosen)


def _queue(bundle_id: int) -> None:
    from .tasks import bundle_build

    # robust: with the broker down the request still answers (the bundle exists, queued); the next request
    # for it queues it again once it has waited longer than a build may take (_message_lost).
    transaction.on_commit(lambda: bundle_build.delay(bundle_id), robust=True)


def _message_lost(bundle: Bundle) -> bool:
    """Still queued after EDGE_BUILD_STALE_SECONDS: no worker got its message (a duplicate is harmless:
    the build claims the row first)."""
    stale = timezone.now() - timedelta(seconds=settings.EDGE_BUILD_STALE_SECONDS)
    return bundle.status == Bundle.Status.QUEUED and (bundle.started_at or bundle.created_at) < stale


def bundle_request(*, version: ModelVersion, variants: list[str] | None = None) -> Bundle:
    """The bundle for (version, variants): queued on first request, then served from the cache.

    A failed bundle is queued again on the next request (its failure may have been transient), and so is
    one whose message was lost (still queued after EDGE_BUILD_STALE_SECONDS).
    """
    if not version.is_servable:
        raise Conflict(
            f"Version {version.number} of '{version.model.name}' is not ready ({version.status}).",
            code="version_not_ready",
            param="version",
        )
    key = variants_normalise(variants)
    bundle, created = Bundle.objects.get_or_create(model_version=version, variants_key=key)
    if created:
        _queue(bundle.pk)
    elif bundle.status == Bundle.Status.FAILED and _requeue(bundle):
        bundle.refresh_from_db()
    elif _message_lost(bundle):
        _queue(bundle.pk)
    return bundle


def _requeue(bundle: Bundle, *, from_statuses: tuple[str, ...] = (Bundle.Status.FAILED,)) -> bool:
    claimed = Bundle.objects.filter(pk=bundle.pk, status__in=from_statuses).update(
        status=Bundle.Status.QUEUED, progress=0, reason="", report={}
    )
    if claimed:
        _queue(bundle.pk)
    return bool(claimed)


def bundle_rebuild(*, bundle: Bundle) -> bool:
    """Staff: build a ready or failed bundle again (a bundle being built is left alone)."""
    return _requeue(bundle, from_statuses=(Bundle.Status.READY, Bundle.Status.FAILED))


def bundle_request_for_alias_move(*, version_id: int) -> None:
    """Build the default bundle of a version an alias now points at (EDGE_BUILD_ON_ALIAS_MOVE)."""
    version = ModelVersion.objects.select_related("model").get(pk=version_id)
    bundle_request(version=version, variants=None)


def _claim(bundle_id: int) -> bool:
    """Queued -> building; or take over a build whose worker died (started too long ago)."""
    now = timezone.now()
    stale = now - timedelta(seconds=settings.EDGE_BUILD_STALE_SECONDS)
    claimable = Q(status=Bundle.Status.QUEUED) | Q(status=Bundle.Status.BUILDING, started_at__lt=stale)
    return bool(
        Bundle.objects.filter(claimable, pk=bundle_id).update(
            status=Bundle.Status.BUILDING, started_at=now, progress=1, attempts=F("attempts") + 1
        )
    )


def bundle_build(*, bundle_id: int) -> None:
    """Build, sign and store a claimed bundle; a failure is recorded on the row with its reason."""
    if not _claim(bundle_id):
        return  # built, being built, or gone: a duplicate delivery does nothing
    bundle = Bundle.objects.select_related("model_version__model").get(pk=bundle_id)
    started = time.perf_counter()
    try:
        assembled = builder.bundle_assemble(
            version=bundle.model_version,
            variants=bundle.variants,
            bundle_id=bundle.public_id,
            built_at=bundle.created_at,
            progress=lambda percent: _progress(bundle_id, percent),
        )
    except builder.BuildFailed as exc:
        _fail(bundle_id, str(exc), report=exc.report)
        return
    except OperationalError:
        Bundle.objects.filter(pk=bundle_id, status=Bundle.Status.BUILDING).update(status=Bundle.Status.QUEUED)
        raise  # transient database trouble: the task retries with backoff
    except Exception:
        logger.exception("bundle %s failed to build", bundle.public_id)
        _fail(bundle_id, "The bundle could not be built because of an internal error; it has been logged.")
        return
    _store(bundle, assembled, seconds=time.perf_counter() - started)


def _progress(bundle_id: int, percent: int) -> None:
    Bundle.objects.filter(pk=bundle_id, status=Bundle.Status.BUILDING).update(progress=min(percent, 99))


def _fail(bundle_id: int, reason: str, *, report: dict[str, Any] | None = None) -> None:
    Bundle.objects.filter(pk=bundle_id, status=Bundle.Status.BUILDING).update(
        status=Bundle.Status.FAILED, reason=reason[:2000], report=report or {}, finished_at=timezone.now()
    )


def _store(bundle: Bundle, assembled: builder.Assembled, *, seconds: float) -> None:
    if bundle.file:
        bundle.file.delete(save=False)
    bundle.file.save(f"{bundle.public_id}.zip", ContentFile(assembled.content), save=False)
    Bundle.objects.filter(pk=bundle.pk, status=Bundle.Status.BUILDING).update(
        status=Bundle.Status.READY,
        progress=100,
        reason="",
        file=bundle.file.name,
        size_bytes=len(assembled.content),
        sha256=packaging.sha256_of(assembled.content),
        key_id=assembled.key_id,
        manifest=assembled.manifest,
        report=assembled.manifest["variants"],
        build_seconds=round(seconds, 3),
        finished_at=timezone.now(),
    )


# --- Downloads ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DownloadGrant:
    token: str
    expires_at: datetime


@dataclass(frozen=True)
class DownloadClaims:
    bundle_id: str
    organisation_id: int
    api_key_id: str
    nonce: str


def bundle_download_grant(*, bundle: Bundle, principal: Principal) -> DownloadGrant:
    """A short-lived URL token for one download of a ready bundle, bound to the caller's organisation.

    The token is signed, not encrypted, so it carries only the bundle's public id and a random nonce;
    the organisation and the key to bill live in a `DownloadURL` row found by that nonce."""
    if bundle.status != Bundle.Status.READY:
        raise Conflict(f"Bundle {bundle.public_id} is not ready ({bundle.status}).", code="bundle_not_ready")
    # A read-only check: no new URL once the month's downloads are used up (the download holds its own).
    limits.quota_settle(reservation=_download_hold(principal.organisation_id, principal.api_key_id), units=0)
    now = timezone.now()
    url = DownloadURL.objects.create(
        nonce=secrets.token_hex(16),
        bundle=bundle,
        organisation_id=principal.organisation_id,
        api_key_id=principal.api_key_id or None,  # None for a portal session (no key)
        created_at=now,
        expires_at=now + timedelta(seconds=settings.EDGE_DOWNLOAD_URL_SECONDS),
    )
    # Expired URLs can never be used again; their downloads are in the ledger. Keep a day for support.
    DownloadURL.objects.filter(expires_at__lt=now - timedelta(days=1)).delete()
    token = signing.dumps({"b": bundle.public_id, "n": url.nonce}, salt=DOWNLOAD_SALT, compress=False)
    return DownloadGrant(token=token, expires_at=url.expires_at)


def _refused(message: str, code: str) -> APIError:
    return APIError(message, code=code, status_code=403)


def _download_url_of(*, public_id: str, token: str) -> DownloadURL:
    try:
        payload: dict[str, Any] = signing.loads(token, salt=DOWNLOAD_SALT, max_age=settings.EDGE_DOWNLOAD_URL_SECONDS)
    except signing.SignatureExpired:
        raise _refused("This download URL has expired; ask for a new one.", "download_url_expired") from None
    except signing.BadSignature:
        raise _refused("This download URL is not valid.", "download_url_invalid") from None
    if not isinstance(payload, dict) or payload.get("b") != public_id:
        raise _refused("This download URL is for another bundle.", "download_url_invalid")
    url = DownloadURL.objects.filter(nonce=str(payload.get("n", "")), bundle__public_id=public_id).first()
    if url is None:  # issued before URLs had rows, or purged long after expiry
        raise _refused("This download URL is not valid.", "download_url_invalid")
    if url.expires_at <= timezone.now():
        raise _refused("This download URL has expired; ask for a new one.", "download_url_expired")
    return url


def bundle_download_authorise(
    *, public_id: str, token: str, principal: Principal | None
) -> tuple[Bundle, DownloadClaims]:
    """Check a download URL: signature, expiry, bundle, organisation (and the caller's key, if any)."""
    url = _download_url_of(public_id=public_id, token=token)
    if principal is not None and principal.organisation_id != url.organisation_id:
        raise _refused("This download URL belongs to another organisation.", "download_url_wrong_organisation")
    if url.api_key_id and not _key_active(url.api_key_id):  # a revoked (leaked) key's URLs stop with it
        raise _refused(
            "The API key that asked for this download URL is revoked or has expired; ask for a new URL.",
            "download_url_key_revoked",
        )
    # The bundle must still be visible to the organisation the URL was issued to, and still ready.
    bundle = selectors.bundle_get(public_id=public_id, organisation_id=url.organisation_id)
    if bundle.status != Bundle.Status.READY or not bundle.file:
        raise Conflict(f"Bundle {bundle.public_id} is not ready ({bundle.status}).", code="bundle_not_ready")
    claims = DownloadClaims(
        bundle_id=public_id, organisation_id=url.organisation_id, api_key_id=url.api_key_id or "", nonce=url.nonce
    )
    return bundle, claims


def _key_active(api_key_id: str) -> bool:
    return APIKey.objects.active().filter(pk=api_key_id).exists()


def _download_hold(organisation_id: int, api_key_id: str | None) -> limits.Reservation:
    """One bundle download held on the plan's monthly cap and the key's budget, or 429 (nothing held).
    With METERING_ENABLED off nothing is held or refused, as on the rest of the request path."""
    if not settings.METERING_ENABLED:
        return limits.Reservation(units=0)
    entitlement = limits.entitlement_get(organisation_id=organisation_id)
    if entitlement.blocked:  # cancelled, or past due beyond the grace period: as for any billable call
        raise payment_required(entitlement.blocked)
    try:
        return limits.quota_reserve(
            organisation_id=organisation_id,
            api_key_id=api_key_id or None,
            meter=Meter.BUNDLE_DOWNLOADS,
            units=1,
            entitlement=entitlement,
        )
    except limits.QuotaRefused as refused:
        raise quota_exceeded(refused) from None


def bundle_download_bill(*, bundle: Bundle, claims: DownloadClaims, status_code: int) -> bool:
    """Called before a GET through a download URL sends bytes (200/206): the URL's first such request
    holds one unit of the monthly quota (429 when it is used up: nothing is served or billed), writes
    the ledger row and settles the hold. A URL already billed (retries, resumes, further ranges) holds
    and bills nothing. Requests of one URL take turns on its row's lock, so parallel ranges never hold a
    second unit (which near the cap would refuse a download that is already paid for).
    Returns whether this request billed."""
    hold: limits.Reservation | None = None
    billed = committed = False
    try:
        with transaction.atomic():
            list(DownloadURL.objects.select_for_update().filter(nonce=claims.nonce).values_list("pk", flat=True))
            if UsageRecord.objects.filter(request_id=f"dl_{claims.nonce}").exists():
                return False
            hold = _download_hold(claims.organisation_id, claims.api_key_id)
            billed = bundle_download_record(bundle=bundle, claims=claims, status_code=status_code)
        committed = True
    finally:
        if hold is not None:  # the unit becomes the billed download, or goes back
            limits.quota_settle(reservation=hold, units=1 if billed and committed else 0)
    return billed


def bundle_download_record(*, bundle: Bundle, claims: DownloadClaims, status_code: int) -> bool:
    """Bill one download per URL: the first request of a URL that serves bytes writes the row;
    retries and further ranges of the same URL find it and add nothing. Returns whether it billed."""
    return usage_record_once(
        request_id=f"dl_{claims.nonce}",
        organisation_id=claims.organisation_id,
        api_key_id=claims.api_key_id or None,
        face=DOWNLOAD_FACE,
        meter=Meter.BUNDLE_DOWNLOADS,
        units=1,
        model_version_id=bundle.model_version_id,
        status_code=status_code,
    )

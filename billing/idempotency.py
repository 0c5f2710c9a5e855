"""`Idempotency-Key` for billable POSTs: replay the first response, bill the call once.

The database is the source of truth: `IdempotencyRecord` is unique on (organisation, key), and the
execution whose record is inserted first is the one that counts. Redis only keeps the hot path to one
database write: an in-flight claim (`SET NX`, 60 s) turns concurrent duplicates into 409s, and a
"done" marker sends repeats straight to the stored response. If Redis lost a claim (restart) and two
executions ran, the loser finds the winner's row at insert time, replays it and is not billed.
Without Redis the claim itself is the row (inserted in-flight, completed after the response).

Stored: every response below 500 except the gateway's own refusals (402/409/429), which are not the
endpoint's answer and may be retried with the same key. Records live `IDEMPOTENCY_TTL_HOURS` (24 h).
"""

import hashlib
from dataclasses import dataclass
from datetime import timedelta

import redis
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import IntegrityError, transaction
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from apiservice.errors import error_response

from .limits import link
from .models import IdempotencyRecord

HEADER = "HTTP_IDEMPOTENCY_KEY"
CLAIM_SECONDS = 60  # an in-flight claim older than this belongs to a crashed worker
REPLAYED_HEADERS = ("X-Model-Version",)
NOT_STORED = {402, 409, 429}


@dataclass
class Claim:
    organisation_id: int
    key: str
    fingerprint: str
    redis_key: str
    in_database: bool  # True: the claim is an unfinished IdempotencyRecord row (Redis was down)


def _ttl() -> timedelta:
    return timedelta(hours=settings.IDEMPOTENCY_TTL_HOURS)


def fingerprint_of(request: HttpRequest) -> str:
    digest = hashlib.sha256(request.method.encode() + b" " + request.path.encode() + b"\n")  # type: ignore[union-attr]
    digest.update(request.body)
    return digest.hexdigest()


def replay(request: HttpRequest, record: IdempotencyRecord) -> HttpResponse:
    response = HttpResponse(bytes(record.body), status=record.status_code or 200, content_type=record.content_type)
    for name, value in record.headers.items():
        response[name] = value
    response["Idempotent-Replayed"] = "true"
    return response


def _conflict(request: HttpRequest) -> HttpResponse:
    return error_response(
        request,
        status=409,
        code="idempotency_in_progress",
        message="A request with this Idempotency-Key is still being processed; retry shortly.",
        headers={"Retry-After": "1"},
    )


def _mismatch(request: HttpRequest) -> HttpResponse:
    return error_response(
        request,
        status=422,
        code="idempotency_key_reused",
        message="This Idempotency-Key was used with a different request body.",
        param="Idempotency-Key",
    )


def _live_record(organisation_id: int, key: str) -> IdempotencyRecord | None:
    return IdempotencyRecord.objects.filter(
        organisation_id=organisation_id, key=key, created_at__gte=timezone.now() - _ttl()
    ).first()


def idempotency_begin(request: HttpRequest, *, organisation_id: int) -> Claim | HttpResponse | None:
    """Claim the request's key, or answer now (replay / 409 / 422 / 400). None: no key sent."""
    key = request.META.get(HEADER)
    if key is None:
        return None
    if not 1 <= len(key) <= 255 or not key.isprintable():
        return error_response(
            request,
            status=400,
            code="invalid_idempotency_key",
            message="Idempotency-Key must be 1 to 255 printable characters.",
            param="Idempotency-Key",
        )
    try:
        fingerprint = fingerprint_of(request)
    except RequestDataTooBig:
        return None  # the gateway answers 413 before the view runs
    redis_key = f"mm:idem:{organisation_id}:" + hashlib.sha256(key.encode()).hexdigest()[:32]
    claim = Claim(organisation_id, key, fingerprint, redis_key, in_database=False)
    client = link.client()
    if client is not None:
        try:
            return _begin_redis(request, client, claim)
        except redis.RedisError as exc:
            link.failed(exc)
    claim.in_database = True
    return _begin_database(request, claim)


def _begin_redis(request: HttpRequest, client: redis.Redis, claim: Claim) -> Claim | HttpResponse:
    if client.set(claim.redis_key, "P:" + claim.fingerprint, nx=True, ex=CLAIM_SECONDS):
        return claim
    marker = client.get(claim.redis_key)
    if marker is None:
        return _conflict(request)
    state, _, fingerprint = marker.decode().partition(":")
    if fingerprint != claim.fingerprint:
        return _mismatch(request)
    if state == "P":
        return _conflict(request)
    record = _live_record(claim.organisation_id, claim.key)
    return replay(request, record) if record is not None else _conflict(request)


def _begin_database(request: HttpRequest, claim: Claim) -> Claim | HttpResponse:
    now = timezone.now()
    try:
        with transaction.atomic():
            IdempotencyRecord.objects.create(
                organisation_id=claim.organisation_id, key=claim.key, fingerprint=claim.fingerprint, created_at=now
            )
        return claim
    except IntegrityError:
        pass
    record = IdempotencyRecord.objects.filter(organisation_id=claim.organisation_id, key=claim.key).first()
    if record is None:
        return _conflict(request)
    abandoned = not record.done and record.created_at < now - timedelta(seconds=CLAIM_SECONDS)
    if record.created_at < now - _ttl() or abandoned:
        taken = IdempotencyRecord.objects.filter(pk=record.pk, created_at=record.created_at).update(
            fingerprint=claim.fingerprint, done=False, status_code=None, body=b"", headers={}, created_at=now
        )
        return claim if taken else _conflict(request)
    if record.fingerprint != claim.fingerprint:
        return _mismatch(request)
    return replay(request, record) if record.done else _conflict(request)


def idempotency_release(claim: Claim) -> None:
    """Give the key back without storing an answer (the call was refused before it ran, or crashed)."""
    if claim.in_database:
        IdempotencyRecord.objects.filter(
            organisation_id=claim.organisation_id, key=claim.key, fingerprint=claim.fingerprint, done=False
        ).delete()
        return
    client = link.client()
    if client is not None:
        try:
            client.delete(claim.redis_key)
        except redis.RedisError as exc:
            link.failed(exc)


def idempotency_finish(request: HttpRequest, claim: Claim, response: HttpResponse) -> tuple[HttpResponse, bool]:
    """Store the first answer. Returns the response to send and whether this execution is the billed one."""
    if response.status_code >= 500 or response.status_code in NOT_STORED or response.streaming:
        idempotency_release(claim)
        return response, True
    fields = {
        "fingerprint": claim.fingerprint,
        "done": True,
        "status_code": response.status_code,
        "content_type": response.get("Content-Type", "application/json"),
        "body": response.content,
        "headers": {name: response[name] for name in REPLAYED_HEADERS if name in response},
    }
    if claim.in_database:
        IdempotencyRecord.objects.filter(organisation_id=claim.organisation_id, key=claim.key).update(**fields)
        return response, True
    won = _insert_or_take_over(claim, fields)
    if not won:
        winner = _live_record(claim.organisation_id, claim.key)
        if winner is None or not winner.done:
            return _conflict(request), False
        if winner.fingerprint != claim.fingerprint:
            return _mismatch(request), False
        return replay(request, winner), False
    client = link.client()
    if client is not None:
        try:
            client.set(claim.redis_key, "D:" + claim.fingerprint, ex=int(_ttl().total_seconds()))
        except redis.RedisError as exc:
            link.failed(exc)
    return response, True


def _insert_or_take_over(claim: Claim, fields: dict[str, object]) -> bool:
    now = timezone.now()
    try:
        with transaction.atomic():
            IdempotencyRecord.objects.create(
                organisation_id=claim.organisation_id, key=claim.key, created_at=now, **fields
            )
        return True
    except IntegrityError:
        # An expired record (older than the TTL) may be replaced; a live one won.
        return bool(
            IdempotencyRecord.objects.filter(
                organisation_id=claim.organisation_id, key=claim.key, created_at__lt=now - _ttl()
            ).update(created_at=now, **fields)
        )


def idempotency_purge() -> int:
    """Delete records past the TTL (beat task)."""
    deleted, _ = IdempotencyRecord.objects.filter(created_at__lt=timezone.now() - _ttl()).delete()
    return deleted

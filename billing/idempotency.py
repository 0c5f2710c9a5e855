"""`Idempotency-Key` for billable POSTs: replay the first response, bill the call once.

The database is the source of truth: `IdempotencyRecord` is unique on (organisation, key), and the
execution whose record is inserted first is the one that counts. The record is written by the same
statement as the call's ledger row (`billing.services.usage_record`), so storing the answer costs no
round trip of its own, and a call is never recorded without its answer or the other way round.

Redis keeps concurrent duplicates apart without touching the database: the admission script
(`billing.limits.admission`) claims the key (`SET NX`, marker `P:<fingerprint>:<unix time>`, kept for
`IDEMPOTENCY_CLAIM_SECONDS`) in the same round trip as the rate limit and quota. A request that finds the marker has the
same fingerprint or gets 422; then the database says whether the first answer is stored (replay) or
still being made (409). A claim older than `CLAIM_SECONDS` without a stored answer belongs to a crashed
worker and is taken over. If Redis lost a claim (restart) and two executions ran, the loser's ledger
row is recorded as a replay (no units) and it answers with the winner's response.
Without Redis the claim itself is the row (inserted in-flight, completed after the response).
The claim lives minutes, not the TTL: at 1,000 calls/s with keys, 24 h of claims would hold ~16 GB of
Redis. A retry that comes after its claim expired runs as a lost execution does: it is recorded as a
replay (no units) and answers with the stored response (or 422 for another body).

Stored: every response below 500 except refusals of the caller rather than the call (401/402/403/409/429),
which are not the endpoint's answer and may be retried with the same key. A key without the endpoint's
scope never reaches the claim or a replay (`billing.gateway.METER_SCOPES`). Records live
`IDEMPOTENCY_TTL_HOURS` (24 h).
"""

import hashlib
import time
from dataclasses import dataclass
from datetime import timedelta

import redis
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import IntegrityError, transaction
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from apiservice.errors import InvalidInput, Unprocessable, error_response, exception_response

from .limits import link
from .models import IdempotencyRecord
from .services import IdempotentAnswer

HEADER = "HTTP_IDEMPOTENCY_KEY"
CLAIM_SECONDS = 60  # an in-flight claim older than this belongs to a crashed worker
# Part of the answer, not of this delivery: without Inference-Header-Content-Length a binary OIP answer
# cannot be split into its JSON head and its tensors.
REPLAYED_HEADERS = ("X-Model-Version", "Inference-Header-Content-Length")
NOT_STORED = {401, 402, 403, 409, 429}
# Give a Redis claim back only if it is still ours; take over a stale one only if it is unchanged.
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
_TAKE_OVER = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then redis.call('set', KEYS[1], ARGV[2], 'EX', ARGV[3]) return 1 end "
    "return 0"
)


@dataclass
class Claim:
    organisation_id: int
    key: str
    fingerprint: str
    redis_key: str
    marker: str  # the value the claim holds in Redis
    in_database: bool = False  # True: the claim is an unfinished IdempotencyRecord row (Redis was down)


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


# The fingerprint covers the method, the path and the body: any of them may be what differs (the same body
# sent to another model's :predict was told its body differed).
KEY_REUSED = "This Idempotency-Key was used with a different request (method, path or body)."


def _mismatch(request: HttpRequest) -> HttpResponse:
    return error_response(
        request,
        status=422,
        code="idempotency_key_reused",
        message=KEY_REUSED,
        param="Idempotency-Key",
    )


def _live_record(organisation_id: int, key: str) -> IdempotencyRecord | None:
    return IdempotencyRecord.objects.filter(
        organisation_id=organisation_id, key=key, created_at__gte=timezone.now() - _ttl()
    ).first()


def claim_seconds() -> int:
    """How long Redis keeps a claim (`IDEMPOTENCY_CLAIM_SECONDS`)."""
    return int(settings.IDEMPOTENCY_CLAIM_SECONDS)


def malformed_key(key: str) -> InvalidInput | None:
    """The 400 for an Idempotency-Key that is not 1 to 255 printable characters, or None: it is fine.
    Every endpoint that takes the header checks it here (the schema's `IDEMPOTENCY_KEY_HEADER`)."""
    if 1 <= len(key) <= 255 and key.isprintable():
        return None
    return InvalidInput(
        "Idempotency-Key must be 1 to 255 printable characters.",
        code="invalid_idempotency_key",
        param="Idempotency-Key",
    )


def idempotency_request(request: HttpRequest, *, organisation_id: int) -> Claim | HttpResponse | None:
    """The claim this request asks for (not taken yet), a 400 for a malformed key, or None: no key sent."""
    key = request.META.get(HEADER)
    if key is None:
        return None
    malformed = malformed_key(key)
    if malformed is not None:
        return exception_response(request, malformed)
    try:
        fingerprint = fingerprint_of(request)
    except RequestDataTooBig:
        return None  # the gateway answers 413 before the view runs
    redis_key = f"mm:idem:{organisation_id}:" + hashlib.sha256(key.encode()).hexdigest()[:32]
    return Claim(organisation_id, key, fingerprint, redis_key, marker=f"P:{fingerprint}:{int(time.time())}")


def idempotency_taken(request: HttpRequest, claim: Claim, *, marker: bytes) -> Claim | HttpResponse:
    """The admission script found `marker` on the key: 422, replay, 409, or the claim if it was stale."""
    _, _, rest = marker.decode(errors="replace").partition(":")
    fingerprint, _, since = rest.partition(":")
    if fingerprint != claim.fingerprint:
        return _mismatch(request)
    record = _live_record(claim.organisation_id, claim.key)
    if record is not None:
        if record.fingerprint != claim.fingerprint:
            return _mismatch(request)
        if record.done:
            return replay(request, record)
        return _conflict(request)
    if not since.isdigit() or time.time() - int(since) < CLAIM_SECONDS:
        return _conflict(request)
    try:  # claimed over a minute ago and nothing stored: the worker that claimed it is gone
        if link.evalsha(_TAKE_OVER, [claim.redis_key], [marker, claim.marker, claim_seconds()]) == 1:
            return claim
    except redis.RedisError as exc:
        link.failed(exc)
    return _conflict(request)


def idempotency_begin_database(request: HttpRequest, claim: Claim) -> Claim | HttpResponse:
    """Claim the key with an unfinished record (Redis unavailable), or answer now (replay/409/422)."""
    claim.in_database = True
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
    try:
        link.evalsha(_RELEASE, [claim.redis_key], [claim.marker])
    except redis.RedisError as exc:
        link.failed(exc)


def idempotency_answer(claim: Claim, response: HttpResponse) -> IdempotentAnswer | None:
    """The answer to store with the call's ledger row, or None when this response is not stored (the
    claim is then given back). A database claim (Redis was down) is completed here instead."""
    if response.status_code >= 500 or response.status_code in NOT_STORED or response.streaming:
        idempotency_release(claim)
        return None
    answer = IdempotentAnswer(
        key=claim.key,
        fingerprint=claim.fingerprint,
        status_code=response.status_code,
        content_type=response.get("Content-Type", "application/json"),
        body=response.content,
        headers={name: response[name] for name in REPLAYED_HEADERS if name in response},
    )
    if not claim.in_database:
        return answer
    IdempotencyRecord.objects.filter(organisation_id=claim.organisation_id, key=claim.key).update(
        fingerprint=answer.fingerprint,
        done=True,
        status_code=answer.status_code,
        content_type=answer.content_type,
        body=answer.body,
        headers=answer.headers,
    )
    return None


def idempotency_lost(request: HttpRequest, claim: Claim) -> HttpResponse:
    """What to answer when another execution of the key was recorded first: its answer, or 409/422."""
    winner = _live_record(claim.organisation_id, claim.key)
    if winner is None or not winner.done:
        return _conflict(request)
    if winner.fingerprint != claim.fingerprint:
        return _mismatch(request)
    return replay(request, winner)


def key_reused(message: str = KEY_REUSED) -> Unprocessable:
    """The 422 for a key used before with another request."""
    return Unprocessable(message, code="idempotency_key_reused", param="Idempotency-Key")


def idempotency_key_take(*, organisation_id: int, key: str, fingerprint: str) -> None:
    """Mark `key` as used by a billable POST that keeps its own answer (a batch's creation, which
    replays the batch itself), inside the caller's transaction: keys are one space per organisation, so
    the same key on an online call is then 422, as any reuse with another request is, and a key an
    online call used is refused here. A record past the TTL is replaced."""
    now = timezone.now()
    records = IdempotencyRecord.objects.filter(organisation_id=organisation_id, key=key)
    records.filter(created_at__lt=now - _ttl()).delete()
    try:
        with transaction.atomic():
            IdempotencyRecord.objects.create(
                organisation_id=organisation_id, key=key, fingerprint=fingerprint, done=True, created_at=now
            )
    except IntegrityError:
        if not records.filter(fingerprint=fingerprint).exists():
            raise key_reused() from None


def idempotency_purge() -> int:
    """Delete records past the TTL (beat task)."""
    deleted, _ = IdempotencyRecord.objects.filter(created_at__lt=timezone.now() - _ttl()).delete()
    return deleted

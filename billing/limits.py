"""Rate limits, monthly quotas and per-key budgets: atomic in Redis, the database when Redis is down.

Everything here runs on the request path, so each check is one Redis round trip and the plan terms
come from a process-local cache (`BILLING_ENTITLEMENT_CACHE_SECONDS`).

- Rate limit: per API key, a clock-aligned fixed window counted by the `limits` library's atomic
  Redis increment script (so the reset time is known without a second round trip). It goes to Redis
  in one pipeline with the quota reservation: one round trip per call (`admission`).
- Quota / budget: a Lua script reserves one unit against the organisation's monthly counter (per
  meter, only when the plan caps it) and the key's monthly budget counter, refusing if either would
  pass its limit; after the response the reservation is settled to the real unit count. A counter
  missing from Redis (new month, restart) is seeded from the ledger; counters expire every
  `BILLING_QUOTA_RESEED_SECONDS`, so any drift (e.g. settles lost while Redis was away) is bounded.
- Redis down: calls are still served; quotas and budgets are checked against the ledger in the
  database; the rate limit (abuse control, not money) is not enforced until Redis answers again.
"""

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import limits
import redis
from django.conf import settings
from django.db.models import Sum
from django.utils import timezone
from limits.storage import RedisStorage

from . import catalog
from .coalesce import Coalescer, Pending
from .models import BillingAccount, BillingMeter, KeyLimit, Plan, PlanPrice, UsageRecord

logger = logging.getLogger(__name__)


# --- Redis connection with a circuit breaker --------------------------------------------------------
@dataclass(eq=False)
class _ScriptCall(Pending):
    source: str = ""
    keys: list[str] = field(default_factory=list)
    args: list[Any] = field(default_factory=list)


class _RedisLink:
    """One client per process; after an error Redis is skipped for `BILLING_REDIS_RETRY_SECONDS`."""

    def __init__(self) -> None:
        self._client: redis.Redis | None = None
        self._storage: RedisStorage | None = None
        self._url = ""
        self._scripts: dict[str, Any] = {}
        self._local = threading.local()
        self._coalescer: Coalescer[_ScriptCall] = Coalescer()
        self.down_until = 0.0

    def _connect(self) -> None:
        url = settings.BILLING_REDIS_URL
        timeout = settings.BILLING_REDIS_TIMEOUT_SECONDS
        pool = redis.ConnectionPool.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self._client = redis.Redis(connection_pool=pool)
        self._storage = RedisStorage(url, connection_pool=pool, key_prefix="mm:rl")
        self._scripts = {}
        self._url = url

    def client(self) -> redis.Redis | None:
        if not settings.BILLING_REDIS_URL or time.monotonic() < self.down_until:
            return None
        if self._client is None or self._url != settings.BILLING_REDIS_URL:
            self._connect()
        return self._client

    def script(self, source: str) -> Any:
        """A registered Lua script (EVALSHA, reloaded by redis-py if Redis forgot it)."""
        assert self._client is not None
        if source not in self._scripts:
            self._scripts[source] = self._client.register_script(source)
        return self._scripts[source]

    def storage(self) -> RedisStorage | None:
        return self._storage if self.client() is not None else None

    def evalsha(self, source: str, keys: list[str], args: list[Any]) -> Any:
        """Run a Lua script, grouped with the calls other threads of this process make at the same
        moment into one pipelined round trip (see `_Coalescer`). Raises redis.RedisError."""
        if self.client() is None:
            raise redis.ConnectionError("billing redis is not configured or is in its retry pause")
        try:
            return self._coalescer.call(
                _ScriptCall(source=source, keys=keys, args=args),
                self._send,
                timeout=settings.BILLING_REDIS_TIMEOUT_SECONDS * 4,
            )
        except TimeoutError as exc:  # waited on another thread's round trip for too long
            raise redis.TimeoutError(str(exc)) from exc

    def _send(self, calls: Sequence[_ScriptCall]) -> None:
        """One pipelined round trip for `calls` on this thread's own connection.

        Through the client, redis-py's pool checkout, retry wrapper and response callbacks cost about
        five times the round trip itself; a connection owned by the thread (made by the same pool,
        with its timeouts) skips them. If Redis forgot a script (restart), it is loaded and the calls
        it failed are sent once more. A connection error fails every call of the batch.
        """
        client = self.client()
        if client is None:
            raise redis.ConnectionError("billing redis is not configured or is in its retry pause")
        local = self._local
        conn = getattr(local, "conn", None)
        if conn is None or getattr(local, "pool", None) is not client.connection_pool:
            conn = client.connection_pool.make_connection()
            local.conn, local.pool = conn, client.connection_pool
        try:
            todo = calls
            for attempt in range(2):
                conn.send_packed_command(
                    conn.pack_commands([("EVALSHA", self._sha(c.source), len(c.keys), *c.keys, *c.args) for c in todo])
                )
                missing: list[_ScriptCall] = []
                for call in todo:
                    try:
                        call.result = conn.read_response()
                    except redis.exceptions.NoScriptError as exc:
                        call.error = exc
                        missing.append(call)
                    except redis.ResponseError as exc:
                        call.error = exc
                if not missing or attempt:
                    return
                for source in {c.source for c in missing}:
                    conn.send_command("SCRIPT", "LOAD", source)
                    conn.read_response()
                for call in missing:
                    call.error = None
                todo = missing
        except (redis.ConnectionError, redis.TimeoutError):
            conn.disconnect()
            raise

    def _sha(self, source: str) -> str:
        return str(self.script(source).sha)

    def failed(self, exc: Exception) -> None:
        logger.warning("billing redis unavailable, falling back to the database: %s", exc)
        self.down_until = time.monotonic() + settings.BILLING_REDIS_RETRY_SECONDS

    def reset(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.disconnect()
        self._local = threading.local()
        self._client = None
        self._storage = None
        self.down_until = 0.0


link = _RedisLink()


# --- Entitlements: what an organisation and a key may do, cached per process --------------------------
@dataclass(frozen=True)
class Entitlement:
    plan_code: str
    rate_limit: limits.RateLimitItem
    caps: dict[str, int]  # meter -> monthly units, only for hard-capped meters
    prices: dict[str, Decimal]  # meter -> minor units per unit
    blocked: str = ""  # "", "past_due" or "canceled" -> 402 on billable calls


@dataclass(frozen=True)
class KeyTerms:
    rate_limit: limits.RateLimitItem | None = None
    monthly_budget_units: int | None = None


class _TTLCache:
    def __init__(self) -> None:
        self._entries: dict[object, tuple[float, object]] = {}
        self._lock = threading.Lock()

    def get(self, key: object) -> object | None:
        entry = self._entries.get(key)
        return entry[1] if entry is not None and entry[0] > time.monotonic() else None

    def put(self, key: object, value: object) -> None:
        with self._lock:
            if len(self._entries) > 20_000:
                self._entries.clear()
            self._entries[key] = (time.monotonic() + settings.BILLING_ENTITLEMENT_CACHE_SECONDS, value)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


entitlement_cache = _TTLCache()


def _blocked(account: BillingAccount | None) -> str:
    if account is None:
        return ""
    if account.status == BillingAccount.Status.CANCELED:
        return "canceled"
    grace = timedelta(days=settings.BILLING_PAST_DUE_GRACE_DAYS)
    since = account.past_due_since
    if account.status == BillingAccount.Status.PAST_DUE and since is not None and since + grace < timezone.now():
        return "past_due"
    return ""


def plan_for_organisation(*, organisation_id: int) -> tuple[Plan, BillingAccount | None]:
    account = BillingAccount.objects.select_related("plan").filter(organisation_id=organisation_id).first()
    if account is not None:
        return account.plan, account
    return plan_get(code=settings.BILLING_DEFAULT_PLAN), None


def plan_get(*, code: str) -> Plan:
    plan = Plan.objects.filter(code=code).first()
    if plan is None:  # the seed was wiped (e.g. a flushed test database): put it back
        catalog.seed(Plan, PlanPrice, BillingMeter)
        plan = Plan.objects.get(code=code)
    return plan


def entitlement_get(*, organisation_id: int) -> Entitlement:
    cached = entitlement_cache.get(("org", organisation_id))
    if isinstance(cached, Entitlement):
        return cached
    plan, account = plan_for_organisation(organisation_id=organisation_id)
    prices = list(plan.prices.all())
    entitlement = Entitlement(
        plan_code=plan.code,
        rate_limit=limits.parse(plan.rate_limit),
        caps={p.meter: int(p.included_units) for p in prices if plan.hard_cap and p.included_units is not None},
        prices={p.meter: p.unit_amount_decimal for p in prices},
        blocked=_blocked(account),
    )
    entitlement_cache.put(("org", organisation_id), entitlement)
    return entitlement


def key_terms_get(*, api_key_id: str) -> KeyTerms:
    cached = entitlement_cache.get(("key", api_key_id))
    if isinstance(cached, KeyTerms):
        return cached
    row = KeyLimit.objects.filter(api_key_id=api_key_id).first()
    terms = KeyTerms()
    if row is not None:
        terms = KeyTerms(
            rate_limit=limits.parse(row.rate_limit) if row.rate_limit else None,
            monthly_budget_units=row.monthly_budget_units,
        )
    entitlement_cache.put(("key", api_key_id), terms)
    return terms


# --- Rate limit -----------------------------------------------------------------------------------
@dataclass
class RateState:
    limit: int
    window: int
    remaining: int | None  # None: not counted (Redis down)
    reset: int
    exceeded: bool = False

    def headers(self) -> dict[str, str]:
        policy = f'"default";q={self.limit};w={self.window}'
        if self.remaining is None:
            return {"RateLimit-Policy": policy}
        return {"RateLimit-Policy": policy, "RateLimit": f'"default";r={self.remaining};t={self.reset}'}


# --- Quotas and budgets ---------------------------------------------------------------------------
# reserve(keys, limits, n): hold n units on each counter whose limit is not '-1', all or none.
# Returns {0, 0} when held, {i, used} when counter i would pass its limit, {-i, 0} when counter i is
# missing (to be seeded from the ledger first). Shared by _RESERVE and _ADMIT.
_RESERVE_FUNCTION = """
local function reserve(keys, limits, n)
  for i = 1, 2 do
    if limits[i] ~= '-1' and redis.call('exists', keys[i]) == 0 then return {-i, 0} end
  end
  for i = 1, 2 do
    if limits[i] ~= '-1' then
      local used = tonumber(redis.call('get', keys[i]))
      if used + n > tonumber(limits[i]) then return {i, used} end
    end
  end
  for i = 1, 2 do
    if limits[i] ~= '-1' then redis.call('incrby', keys[i], n) end
  end
  return {0, 0}
end
"""
_RESERVE = _RESERVE_FUNCTION + "return reserve(KEYS, ARGV, tonumber(ARGV[3]))\n"
_SETTLE = """
for i = 1, #KEYS do
  if redis.call('exists', KEYS[i]) == 1 then redis.call('incrby', KEYS[i], ARGV[1]) end
end
return 0
"""


class QuotaRefused(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Reservation:
    """Units held for a call until it is settled; `keys` are the Redis counters that hold them."""

    units: int
    keys: list[str] = field(default_factory=list)


def month_start(now: datetime | None = None) -> datetime:
    now = now or timezone.now()
    return now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def seconds_to_next_month() -> int:
    start = month_start()
    following = (start + timedelta(days=32)).replace(day=1)
    return max(1, int((following - timezone.now()).total_seconds()))


def _month_tag() -> str:
    """The UTC month, e.g. `202611` (the same month as `month_start()`, without building datetimes)."""
    return time.strftime("%Y%m", time.gmtime())


def _ledger_units(*, organisation_id: int, meter: str | None = None, api_key_id: str | None = None) -> int:
    rows = UsageRecord.objects.filter(organisation_id=organisation_id, created_at__gte=month_start())
    rows = rows.filter(meter=meter) if meter else rows.filter(api_key_id=api_key_id, units__gt=0)
    return int(rows.aggregate(total=Sum("units"))["total"] or 0)


def _refusal(which: int, *, meter: str, cap: int) -> QuotaRefused:
    if which == 1:
        return QuotaRefused("quota_exceeded", f"Your plan's monthly quota of {cap} {meter} units is used up.")
    return QuotaRefused("budget_exceeded", f"This API key's monthly budget of {cap} units is spent.")


def quota_reserve(
    *, organisation_id: int, api_key_id: str | None, meter: str, units: int = 1, entitlement: Entitlement
) -> Reservation:
    """Hold `units` of the organisation's quota and the key's budget, or raise QuotaRefused (429)."""
    cap = entitlement.caps.get(meter)
    budget = key_terms_get(api_key_id=api_key_id).monthly_budget_units if api_key_id else None
    if cap is None and budget is None:
        return Reservation(units=0)
    client = link.client()
    if client is not None:
        try:
            return _reserve_redis(client, organisation_id, api_key_id, meter, units, cap, budget)
        except redis.RedisError as exc:
            link.failed(exc)
    return _reserve_database(organisation_id, api_key_id, meter, units, cap, budget)


def _reserve_redis(
    client: redis.Redis, org: int, key: str | None, meter: str, units: int, cap: int | None, budget: int | None
) -> Reservation:
    tag = _month_tag()
    keys = [f"mm:q:{org}:{meter}:{tag}", f"mm:b:{key}:{tag}"]
    args = [cap if cap is not None else -1, budget if budget is not None else -1, units]
    for _ in range(3):
        which, _used = link.script(_RESERVE)(keys=keys, args=args)
        if which == 0:
            return Reservation(units=units, keys=[k for k, a in zip(keys, args[:2], strict=True) if a != -1])
        if which > 0:
            raise _refusal(which, meter=meter, cap=int(args[which - 1]))
        seed = (
            _ledger_units(organisation_id=org, meter=meter)
            if which == -1
            else _ledger_units(organisation_id=org, api_key_id=key)
        )
        client.set(keys[-which - 1], seed, ex=settings.BILLING_QUOTA_RESEED_SECONDS, nx=True)
    raise redis.RedisError("quota counters could not be seeded")


def _reserve_database(
    org: int, key: str | None, meter: str, units: int, cap: int | None, budget: int | None
) -> Reservation:
    if cap is not None and _ledger_units(organisation_id=org, meter=meter) + units > cap:
        raise _refusal(1, meter=meter, cap=cap)
    if budget is not None and _ledger_units(organisation_id=org, api_key_id=key) + units > budget:
        raise _refusal(2, meter=meter, cap=budget)
    return Reservation(units=0)


# --- Admission: the rate-limit hit, the idempotency claim and the quota reservation in one round trip --
# KEYS[1]: the key's fixed-window counter, the key the `limits` library's own Redis storage counts in
# (same name, same INCRBY-then-EXPIRE on first hit, so `limits` reads and resets it as its own).
# KEYS[2], KEYS[3]: quota and budget counters; KEYS[4]: the Idempotency-Key's claim.
# ARGV[1]: window expiry; ARGV[2]: the rate limit; ARGV[3], ARGV[4]: cap and budget (-1: none);
# ARGV[5]: the claim's marker ('' = no key sent), ARGV[6]: its expiry.
# A rate-limited call claims and reserves nothing; a call whose key is already claimed reserves nothing.
# Returns {count, which, used} where which/used are the reservation's (see _RESERVE), 0 when none,
# and a fourth element, the marker found, when the key was already claimed.
_ADMIT = (
    _RESERVE_FUNCTION
    + """
local count = redis.call('incrby', KEYS[1], 1)
if count == 1 then redis.call('expire', KEYS[1], ARGV[1]) end
if #KEYS == 1 or count > tonumber(ARGV[2]) then return {count, 0, 0} end
if ARGV[5] ~= '' and not redis.call('set', KEYS[4], ARGV[5], 'NX', 'EX', ARGV[6]) then
  return {count, 0, 0, redis.call('get', KEYS[4]) or ''}
end
local held = reserve({KEYS[2], KEYS[3]}, {ARGV[3], ARGV[4]}, 1)
return {count, held[1], held[2]}
"""
)

Claimed = bool | bytes | None  # True: claimed in Redis; bytes: the marker found; None: Redis not asked


def admission(
    *,
    api_key_id: str,
    item: limits.RateLimitItem,
    organisation_id: int,
    meter: str | None,
    entitlement: Entitlement,
    claim: tuple[str, str, int] | None = None,
) -> tuple[RateState, "Reservation | QuotaRefused | None", Claimed]:
    """Count the call against the key's rate limit and, for a billable call (`meter`), claim its
    Idempotency-Key (`claim`: Redis key, marker, expiry) and hold one unit of quota and budget: one Lua
    script, one Redis round trip. A rate-limited call holds nothing."""
    now = time.time()
    window = int(item.get_expiry())
    state = RateState(limit=item.amount, window=window, remaining=None, reset=max(1, int(window - (now % window))))
    cap = entitlement.caps.get(meter) if meter else None
    budget = key_terms_get(api_key_id=api_key_id).monthly_budget_units if meter else None
    wants_quota = meter is not None and (cap is not None or budget is not None)
    storage = link.storage()
    if storage is None:
        return state, _quota_database(organisation_id, api_key_id, meter, cap, budget) if wants_quota else None, None
    tag = _month_tag()
    keys = [f"mm:q:{organisation_id}:{meter}:{tag}", f"mm:b:{api_key_id}:{tag}"]
    args = [cap if cap is not None else -1, budget if budget is not None else -1, 1]
    rate_key = storage.prefixed_key(item.key_for(api_key_id, str(int(now // window))))
    script_keys: list[str] = [rate_key]
    script_args: list[int | str] = [window + 1, item.amount]
    if wants_quota or claim is not None:
        claim_key, marker, expiry = claim or ("", "", 0)
        script_keys += [*keys, claim_key]
        script_args += [*args[:2], marker, expiry]
    try:
        count, which, used, *found = link.evalsha(_ADMIT, script_keys, script_args)
        state.remaining, state.exceeded = max(0, item.amount - int(count)), int(count) > item.amount
        outcome = None
        if wants_quota and not state.exceeded and not found:
            client = link.client()
            assert client is not None
            outcome = _quota_outcome(client, [which, used], keys, args, organisation_id, api_key_id, meter)
    except redis.RedisError as exc:
        link.failed(exc)
        return state, _quota_database(organisation_id, api_key_id, meter, cap, budget) if wants_quota else None, None
    claimed: Claimed = None if claim is None or state.exceeded else (bytes(found[0]) if found else True)
    return state, outcome, claimed


def _quota_outcome(
    client: redis.Redis, result: list[int], keys: list[str], args: list[int], org: int, key: str, meter: str | None
) -> "Reservation | QuotaRefused":
    which = int(result[0])
    if which == 0:
        return Reservation(units=1, keys=[k for k, a in zip(keys, args[:2], strict=True) if a != -1])
    if which > 0:
        return _refusal(which, meter=meter or "", cap=int(args[which - 1]))
    cap, budget = (a if a != -1 else None for a in args[:2])
    try:  # a counter had to be seeded from the ledger first (new month, restart, expiry)
        return _reserve_redis(client, org, key, meter or "", 1, cap, budget)
    except QuotaRefused as refused:
        return refused


def _quota_database(
    org: int, key: str, meter: str | None, cap: int | None, budget: int | None
) -> "Reservation | QuotaRefused":
    try:
        return _reserve_database(org, key, meter or "", 1, cap, budget)
    except QuotaRefused as refused:
        return refused


def quota_settle(*, reservation: Reservation, units: int) -> None:
    """Turn a reservation into the call's real units (0 for a failed call). Best effort: drift is reseeded."""
    delta = units - reservation.units
    if not reservation.keys or delta == 0:
        return
    client = link.client()
    if client is None:
        return
    try:
        link.script(_SETTLE)(keys=reservation.keys, args=[delta])
    except redis.RedisError as exc:
        link.failed(exc)

"""Rate limits, monthly quotas and per-key budgets: atomic in Redis, the database when Redis is down.

The counters live in Redis; each process leases small blocks of units from them and spends those
locally, so most calls make no Redis round trip at all (`admission`):

- Rate limit: per API key, a clock-aligned fixed window, counted in the key the `limits` library's
  Redis storage uses. A lease is a block of the window's calls (valid until the window ends).
- Quota / budget: the organisation's monthly counter per meter (only when the plan caps it) and the
  key's monthly budget counter. A lease is a block held on both at once, all or none, refused if
  either would pass its limit; it lives `BILLING_LEASE_SECONDS`, and what it did not spend is given
  back with the process's next round trip for those counters. After the response the call's
  reservation is settled to its real unit count, from the lease where it can.
- Block sizes: at most `BILLING_LEASE_UNITS`, and at most a sixteenth of what is left under the limit,
  so near a limit every block is one unit and each call is counted in Redis as it comes: a limit is
  never passed, and units held by other processes delay a refusal by at most a sixteenth of the room.
- A counter missing from Redis (new month, restart) is seeded from the ledger; counters expire every
  `BILLING_QUOTA_RESEED_SECONDS`, so any drift (e.g. settles lost while Redis was away) is bounded.
  Units a process spent from a lease of a counter that was reseeded meanwhile are counted again in
  the new counter (the seed may already hold some: the error is on the refusing side).
- Redis down: calls are still served; quotas and budgets are checked against the ledger in the
  database; the rate limit (abuse control, not money) is not enforced until Redis answers again.
"""

import calendar
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import lru_cache
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
    source: str = ""  # a Lua script, or "" for a plain command (`args`)
    keys: list[str] = field(default_factory=list)
    args: list[Any] = field(default_factory=list)

    def packed(self, sha: str) -> tuple[Any, ...]:
        return ("EVALSHA", sha, len(self.keys), *self.keys, *self.args) if self.source else tuple(self.args)


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
        return self._call(_ScriptCall(source=source, keys=keys, args=args))

    def command(self, *args: Any) -> Any:
        """Run one plain command, grouped like `evalsha`. Raises redis.RedisError."""
        return self._call(_ScriptCall(args=list(args)))

    def _call(self, call: _ScriptCall) -> Any:
        if self.client() is None:
            raise redis.ConnectionError("billing redis is not configured or is in its retry pause")
        try:
            return self._coalescer.call(call, self._send, timeout=settings.BILLING_REDIS_TIMEOUT_SECONDS * 4)
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
                conn.send_packed_command(conn.pack_commands([c.packed(self._sha(c.source)) for c in todo]))
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
        return str(self.script(source).sha) if source else ""

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
        leases.clear()


link = _RedisLink()


# --- Entitlements: what an organisation and a key may do, cached per process --------------------------
@dataclass(frozen=True)
class Entitlement:
    plan_code: str
    rate_limit: limits.RateLimitItem
    caps: dict[str, int]  # meter -> monthly units, only for hard-capped meters
    prices: dict[str, Decimal]  # meter -> minor units per unit
    blocked: str = ""  # "", "past_due" or "canceled" -> 402 on billable calls
    currency: str = "usd"  # the plan's, which `prices` are in


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
        currency=plan.currency,
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
# Hold ARGV[3] units on each counter whose limit (ARGV[1], ARGV[2]) is not '-1', all or none.
# Returns {0, 0} when held, {i, used} when counter i would pass its limit, {-i, 0} when counter i is
# missing (to be seeded from the ledger first).
_RESERVE = """
local n = tonumber(ARGV[3])
for i = 1, 2 do
  if ARGV[i] ~= '-1' and redis.call('exists', KEYS[i]) == 0 then return {-i, 0} end
end
for i = 1, 2 do
  if ARGV[i] ~= '-1' then
    local used = tonumber(redis.call('get', KEYS[i]))
    if used + n > tonumber(ARGV[i]) then return {i, used} end
  end
end
for i = 1, 2 do
  if ARGV[i] ~= '-1' then redis.call('incrby', KEYS[i], n) end
end
return {0, 0}
"""
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
    """Units held for a call until it is settled; `keys` are the Redis counters that hold them, `lease`
    the process's lease they came from (settled locally where it can)."""

    units: int
    keys: list[str] = field(default_factory=list)
    lease: "Lease | None" = None
    lease_key: str = ""
    counters: "_Counters | None" = None  # what the units are held on, to hold more (`quota_extend`)


def month_start(now: datetime | None = None) -> datetime:
    now = now or timezone.now()
    return now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def seconds_to_next_month() -> int:
    start = month_start()
    following = (start + timedelta(days=32)).replace(day=1)
    return max(1, int((following - timezone.now()).total_seconds()))


_month: tuple[str, float, float] = ("", 0.0, 0.0)  # the last month tag, and the epoch seconds it spans


def _month_tag() -> str:
    """The UTC month, e.g. `202611` (the same month as `month_start()`, without building datetimes);
    worked out once per month rather than on every call."""
    global _month
    tag, starts, ends = _month
    now = time.time()
    if starts <= now < ends:
        return tag
    today = time.gmtime(now)
    year, month = today.tm_year, today.tm_mon
    following = (year + 1, 1) if month == 12 else (year, month + 1)
    tag = f"{year:04d}{month:02d}"
    _month = (tag, calendar.timegm((year, month, 1, 0, 0, 0)), calendar.timegm((*following, 1, 0, 0, 0)))
    return tag


def _ledger_units(*, organisation_id: int, meter: str | None = None, api_key_id: str | None = None) -> int:
    rows = UsageRecord.objects.filter(organisation_id=organisation_id, created_at__gte=month_start())
    rows = rows.filter(meter=meter) if meter else rows.filter(api_key_id=api_key_id, units__gt=0)
    return int(rows.aggregate(total=Sum("units"))["total"] or 0)


def _refusal(which: int, *, meter: str, cap: int) -> QuotaRefused:
    # "Not enough is left": a call (or batch chunk) is refused whole when its units do not all fit,
    # which may leave some of the month's units unused.
    if which == 1:
        return QuotaRefused(
            "quota_exceeded", f"Not enough is left of your plan's monthly quota of {cap} {meter} units."
        )
    return QuotaRefused("budget_exceeded", f"Not enough is left of this API key's monthly budget of {cap} units.")


@dataclass
class _Counters:
    """The quota and budget counters a billable call holds units on, and the key of their lease."""

    organisation_id: int
    api_key_id: str | None
    meter: str
    cap: int | None
    budget: int | None

    def __post_init__(self) -> None:
        self.keys, self.limits, self.held_keys, self.lease_key, self.terms = _counter_keys(
            self.organisation_id, self.api_key_id, self.meter, self.cap, self.budget, _month_tag()
        )

    def leased(self, lease: "Lease") -> Reservation:
        return Reservation(units=1, keys=self.held_keys, lease=lease, lease_key=self.lease_key, counters=self)

    def give_back(self, lease: "Lease | None") -> None:
        if lease is not None:
            leases.give_back(self.lease_key, lease, 1)

    def database(self) -> "Reservation | QuotaRefused":
        try:
            return _reserve_database(self, 1)
        except QuotaRefused as refused:
            return refused

    def seeded(self, which: int) -> "Reservation | QuotaRefused":
        """A block the script did not grant: a refusal (which > 0), or a counter to seed from the ledger
        first (which < 0: new month, restart, expiry), then one unit reserved exactly."""
        if which > 0:
            return _refusal(which, meter=self.meter, cap=self.limits[which - 1])
        client = link.client()
        assert client is not None
        try:
            return _reserve_redis(client, self, 1)
        except QuotaRefused as refused:
            return refused


@lru_cache(maxsize=4096)
def _counter_keys(
    organisation_id: int, api_key_id: str | None, meter: str, cap: int | None, budget: int | None, tag: str
) -> tuple[list[str], list[int], list[str], str, tuple[int, ...]]:
    """(counter keys, their limits (-1: none), the capped ones' keys, the lease key, the limits as the
    terms a lease is granted under): the same for every call of a key in a month, so made once (callers
    must not change the lists)."""
    keys = [f"mm:q:{organisation_id}:{meter}:{tag}", f"mm:b:{api_key_id}:{tag}"]
    caps = [cap if cap is not None else -1, budget if budget is not None else -1]
    held = [key for key, amount in zip(keys, caps, strict=True) if amount != -1]
    return keys, caps, held, "|".join(keys), tuple(caps)


def quota_reserve(
    *, organisation_id: int, api_key_id: str | None, meter: str, units: int = 1, entitlement: Entitlement
) -> Reservation:
    """Hold `units` of the organisation's quota and the key's budget, or raise QuotaRefused (429)."""
    cap = entitlement.caps.get(meter)
    budget = key_terms_get(api_key_id=api_key_id).monthly_budget_units if api_key_id else None
    if cap is None and budget is None:
        return Reservation(units=0)
    counters = _Counters(organisation_id, api_key_id, meter, cap, budget)
    client = link.client()
    if client is not None:
        try:
            return _reserve_redis(client, counters, units)
        except redis.RedisError as exc:
            link.failed(exc)
    return _reserve_database(counters, units)


def _reserve_redis(client: redis.Redis, counters: _Counters, units: int) -> Reservation:
    for _ in range(3):
        which, _used = link.script(_RESERVE)(keys=counters.keys, args=[*counters.limits, units])
        if which == 0:
            return Reservation(units=units, keys=counters.held_keys, counters=counters)
        if which > 0:
            raise _refusal(which, meter=counters.meter, cap=counters.limits[which - 1])
        seed = (
            _ledger_units(organisation_id=counters.organisation_id, meter=counters.meter)
            if which == -1
            else _ledger_units(organisation_id=counters.organisation_id, api_key_id=counters.api_key_id)
        )
        client.set(counters.keys[-which - 1], seed, ex=settings.BILLING_QUOTA_RESEED_SECONDS, nx=True)
    raise redis.RedisError("quota counters could not be seeded")


def _reserve_database(counters: _Counters, units: int) -> Reservation:
    org, cap, budget = counters.organisation_id, counters.cap, counters.budget
    if cap is not None and _ledger_units(organisation_id=org, meter=counters.meter) + units > cap:
        raise _refusal(1, meter=counters.meter, cap=cap)
    if budget is not None and _ledger_units(organisation_id=org, api_key_id=counters.api_key_id) + units > budget:
        raise _refusal(2, meter=counters.meter, cap=budget)
    return Reservation(units=units, counters=counters)  # checked, not held (no keys): the ledger is the count


def quota_extend(*, reservation: Reservation, units: int) -> None:
    """Hold `units` in all for a call whose size became known after admission (its rows), or raise
    QuotaRefused holding nothing more: so a call never takes a counter past its cap or budget.
    From the call's lease when it covers them (no round trip), else atomically in Redis, else (Redis
    unavailable) checked against the ledger like the admission was."""
    delta = units - reservation.units
    counters = reservation.counters
    if delta <= 0 or counters is None:
        return
    if reservation.keys:
        if reservation.lease is not None and leases.take(reservation.lease_key, delta, counters.terms) is not None:
            reservation.units = units
            return
        client = link.client()
        if client is not None:
            try:
                _reserve_redis(client, counters, delta)
            except redis.RedisError as exc:
                link.failed(exc)
            else:
                reservation.units = units
                return
    _reserve_database(counters, units)  # the ledger's count plus all of this call's units
    reservation.units = units


# --- Leases: blocks of units a process took from a Redis counter and spends locally -----------------
@dataclass(eq=False)
class Lease:
    """Units granted to this process on one counter (rate) or one pair of counters (quota + budget)."""

    units: int  # still to spend here
    until: float  # monotonic: not spent after this
    count: int = 0  # rate: the window's count in Redis when granted (for the RateLimit header)
    spent: int = 0  # quota: units spent from it, counted again if the counters were reseeded meanwhile
    incarnations: tuple[int, int] = (0, 0)  # quota: the counters' PEXPIRETIME when granted
    # quota: the cap and budget it was granted under (-1: none). Terms change (staff lower a quota, a
    # customer sets a key's budget) while a lease is out: its units were room under the old terms, so
    # it is not spent under the new ones but given back with the next round trip.
    terms: tuple[int, ...] = ()


class _Leases:
    """This process's leases, by counter key; spending from them is atomic under one lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._leases: dict[str, Lease] = {}

    def take(self, key: str, units: int = 1, terms: tuple[int, ...] = ()) -> Lease | None:
        """Spend `units` from the live lease on `key` granted under `terms`; None (nothing spent) if it
        cannot cover them."""
        with self._lock:
            lease = self._leases.get(key)
            if lease is None or lease.units < units or lease.until < time.monotonic() or lease.terms != terms:
                return None
            lease.units -= units
            lease.spent += units
            return lease

    def give_back(self, key: str, lease: Lease, units: int) -> bool:
        """Return `units` to `lease` if it is still the live lease on `key` (it may have expired: what
        it has not spent is given back to Redis with the next round trip)."""
        with self._lock:
            if self._leases.get(key) is not lease:
                return False
            lease.units += units
            lease.spent -= units
            return True

    def replace(self, key: str, lease: Lease | None) -> Lease | None:
        """Put `lease` in place of the lease on `key` (None: remove it); return the lease it replaced.
        A live lease of the same counters (another thread's, granted at the same moment) is merged
        into it rather than dropped."""
        with self._lock:
            previous = self._leases.pop(key, None)
            if (
                lease is not None
                and previous is not None
                and previous.incarnations == lease.incarnations
                and previous.until >= time.monotonic()
            ):
                lease.units, lease.spent = lease.units + previous.units, lease.spent + previous.spent
                lease.count = max(lease.count, previous.count)
                previous.units = 0
            if lease is not None:
                if len(self._leases) > 20_000:
                    self._leases.clear()
                self._leases[key] = lease
            return previous

    def clear(self) -> None:
        with self._lock:
            self._leases.clear()


leases = _Leases()


# --- Admission: the rate-limit hit, the idempotency claim and the quota reservation ---------------------
# One Lua script, one round trip, made only when a lease is missing or spent, or to claim a key.
# KEYS[1]: the key's fixed-window counter, the key the `limits` library's own Redis storage counts in
# (same name, expiry set on the first hit, so `limits` reads and resets it as its own).
# KEYS[2], KEYS[3]: quota and budget counters; KEYS[4]: the Idempotency-Key's claim.
# ARGV[1]: window expiry; ARGV[2]: the rate limit; ARGV[3]: the rate block wanted (0: this call's hit is
# already counted by a lease); ARGV[4], ARGV[5]: cap and budget (-1: none); ARGV[6]: the quota block
# wanted (0: none needed); ARGV[7]: the claim's marker ('' = no key sent), ARGV[8]: its expiry;
# ARGV[9], ARGV[10]: the previous quota lease's counter incarnations (PEXPIRETIME), ARGV[11], ARGV[12]:
# what it spent and what it left unspent: given back to the same incarnation, spent units counted
# again in a new one (first, whatever this call's own outcome).
# A rate-limited call claims and reserves nothing; a call whose key is already claimed reserves nothing.
# Returns {count, which, used, rate block, quota block, marker found, incarnation 1, incarnation 2}:
# count -1 when the rate was not counted here; which/used as _RESERVE's (0 when none, which < 0: a
# counter is missing and must be seeded); the marker '' when the key was claimed here or not asked.
_ADMIT = """
local function block(room, want)
  if room <= 0 then return 0 end
  return math.max(1, math.min(want, math.floor(room / 16)))
end
local limits = {ARGV[4], ARGV[5]}
if #KEYS > 1 then
  local spent, unspent = tonumber(ARGV[11]), tonumber(ARGV[12])
  for i = 1, 2 do
    if limits[i] ~= '-1' and (spent > 0 or unspent > 0) and redis.call('exists', KEYS[i + 1]) == 1 then
      if redis.call('pexpiretime', KEYS[i + 1]) == tonumber(ARGV[8 + i]) then
        redis.call('decrby', KEYS[i + 1], unspent)
      else
        redis.call('incrby', KEYS[i + 1], spent)
      end
    end
  end
end
local count, rate = -1, 0
if ARGV[3] ~= '0' then
  local used = tonumber(redis.call('get', KEYS[1]) or '0')
  rate = block(tonumber(ARGV[2]) - used, tonumber(ARGV[3]))
  count = redis.call('incrby', KEYS[1], math.max(rate, 1))
  if used == 0 then redis.call('expire', KEYS[1], ARGV[1]) end
  if rate == 0 then return {count, 0, 0, 0, 0, '', 0, 0} end
end
if #KEYS == 1 then return {count, 0, 0, rate, 0, '', 0, 0} end
if ARGV[7] ~= '' and not redis.call('set', KEYS[4], ARGV[7], 'NX', 'EX', ARGV[8]) then
  return {count, 0, 0, rate, 0, redis.call('get', KEYS[4]) or '', 0, 0}
end
local want = tonumber(ARGV[6])
if want == 0 then return {count, 0, 0, rate, 0, '', 0, 0} end
local room = want * 16
for i = 1, 2 do
  if limits[i] ~= '-1' then
    if redis.call('exists', KEYS[i + 1]) == 0 then return {count, -i, 0, rate, 0, '', 0, 0} end
    local used = tonumber(redis.call('get', KEYS[i + 1]))
    if used >= tonumber(limits[i]) then return {count, i, used, rate, 0, '', 0, 0} end
    room = math.min(room, tonumber(limits[i]) - used)
  end
end
local held = block(room, want)
local incarnations = {0, 0}
for i = 1, 2 do
  if limits[i] ~= '-1' then
    redis.call('incrby', KEYS[i + 1], held)
    incarnations[i] = redis.call('pexpiretime', KEYS[i + 1])
  end
end
return {count, 0, 0, rate, held, '', incarnations[1], incarnations[2]}
"""


@lru_cache(maxsize=4096)
def _rate_key(storage: RedisStorage, item: limits.RateLimitItem, api_key_id: str, window_index: int) -> str:
    """The Redis key of a key's rate-limit window, as the `limits` library names it."""
    return storage.prefixed_key(item.key_for(api_key_id, str(window_index)))


Claimed = bool | bytes | None  # True: claimed in Redis; bytes: the marker found; None: Redis not asked


def _redis_failed(
    exc: redis.RedisError, counters: _Counters | None, lease: Lease | None
) -> "Reservation | QuotaRefused | None":
    """Redis failed mid-admission: the leased unit goes back, and quotas are checked in the database."""
    link.failed(exc)
    if counters is None:
        return None
    counters.give_back(lease)
    return counters.database()


def admission(
    *,
    api_key_id: str,
    item: limits.RateLimitItem,
    organisation_id: int,
    meter: str | None,
    entitlement: Entitlement,
    key_terms: KeyTerms,
    claim: tuple[str, str, int] | None = None,
) -> tuple[RateState, "Reservation | QuotaRefused | None", Claimed]:
    """Count the call against the key's rate limit and, for a billable call (`meter`), claim its
    Idempotency-Key (`claim`: Redis key, marker, expiry) and hold one unit of quota and budget.

    The units come from this process's leases. When one runs out, the `_ADMIT` script takes new ones
    (and claims the key) in one round trip; when they cover the call, a key is claimed by one plain
    `SET NX`, and a call without a key makes no round trip. A rate-limited call holds nothing."""
    now = time.time()
    window = int(item.get_expiry())
    state = RateState(limit=item.amount, window=window, remaining=None, reset=max(1, int(window - (now % window))))
    cap = entitlement.caps.get(meter) if meter else None
    budget = key_terms.monthly_budget_units if meter else None
    counters = (
        _Counters(organisation_id, api_key_id, meter, cap, budget)
        if meter is not None and (cap is not None or budget is not None)
        else None
    )
    storage = link.storage()
    if storage is None:
        return state, counters.database() if counters else None, None
    rate_key = _rate_key(storage, item, api_key_id, int(now // window))
    rate_lease = leases.take(rate_key)
    quota_lease = leases.take(counters.lease_key, terms=counters.terms) if counters else None
    if rate_lease is not None and (counters is None or quota_lease is not None):
        state.remaining = max(0, item.amount - rate_lease.count + rate_lease.units)
        reservation = counters.leased(quota_lease) if counters and quota_lease else None
        if claim is None:
            return state, reservation, None
        try:  # Redis >= 7.0: SET with both NX and GET
            found = link.command("SET", claim[0], claim[1], "NX", "GET", "EX", claim[2])
        except redis.RedisError as exc:
            return state, _redis_failed(exc, counters, quota_lease), None
        if found is None:
            return state, reservation, True
        if counters:
            counters.give_back(quota_lease)
        return state, None, bytes(found)

    block = max(1, settings.BILLING_LEASE_UNITS)
    wants_block = counters is not None and quota_lease is None
    previous = leases.replace(counters.lease_key, None) if counters and wants_block else None
    script_keys: list[str] = [rate_key]
    script_args: list[int | str] = [window + 1, item.amount, 0 if rate_lease is not None else block]
    if counters is not None or claim is not None:
        claim_key, marker, expiry = claim or ("", "", 0)
        script_keys += [*(counters.keys if counters else ["", ""]), claim_key]
        script_args += [*(counters.limits if counters else [-1, -1]), block if wants_block else 0, marker, expiry]
        script_args += [*previous.incarnations, previous.spent, previous.units] if previous else [0, 0, 0, 0]
    try:
        count, which, _, rate, held, found, *incarnations = link.evalsha(_ADMIT, script_keys, script_args)
    except redis.RedisError as exc:
        return state, _redis_failed(exc, counters, quota_lease), None
    if rate_lease is None:
        state.exceeded = int(rate) == 0
        rate_lease = Lease(units=max(0, int(rate) - 1), until=time.monotonic() + state.reset, count=int(count))
        if not state.exceeded:
            leases.replace(rate_key, rate_lease)
    state.remaining = max(0, item.amount - rate_lease.count + rate_lease.units)
    if state.exceeded or found:  # nothing claimed or reserved; a found marker: the key is taken
        if counters:
            counters.give_back(quota_lease)
        return state, None, bytes(found) if found and not state.exceeded else None
    claimed: Claimed = None if claim is None else True
    if counters is None:
        return state, None, claimed
    if quota_lease is not None:
        return state, counters.leased(quota_lease), claimed
    if int(held) == 0:
        return state, counters.seeded(int(which)), claimed
    lease = Lease(
        units=int(held) - 1,
        spent=1,
        until=time.monotonic() + settings.BILLING_LEASE_SECONDS,
        incarnations=(int(incarnations[0]), int(incarnations[1])),
        terms=counters.terms,
    )
    leases.replace(counters.lease_key, lease)
    return state, counters.leased(lease), claimed


def quota_settle(*, reservation: Reservation, units: int) -> None:
    """Turn a reservation into the call's real units (0 for a failed call): from or back to its lease
    where it can, else in Redis. Best effort: drift is reseeded."""
    delta = units - reservation.units
    if not reservation.keys or delta == 0:
        return
    lease = reservation.lease
    if lease is not None:
        if delta < 0 and leases.give_back(reservation.lease_key, lease, -delta):
            return
        terms = reservation.counters.terms if reservation.counters else ()
        if delta > 0 and leases.take(reservation.lease_key, delta, terms) is not None:
            return
    client = link.client()
    if client is None:
        return
    try:
        link.script(_SETTLE)(keys=reservation.keys, args=[delta])
    except redis.RedisError as exc:
        link.failed(exc)

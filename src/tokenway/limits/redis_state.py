"""Admission state on Redis, shared by every replica: one atomic script per operation.

- Rate limits: a key's admitted requests are a sorted set scored by the server's clock (a true
  60-second sliding window); its tokens are reservations (id → tokens) with a running total,
  trimmed as they leave the window and adjusted in place at settlement. One round trip admits
  both RPM and TPM.
- Budgets: one hash per account and period (`spent`, `reserved`, in integer nano-dollars,
  worst cases rounded up), admitted all-or-none across the accounts that cover a request,
  expiring a day after its period ends.

Every key lives under `prefix` and expires, so nothing grows without bound. When Redis cannot
be reached within `timeout_s`, the configured policy decides: `open` falls back to this
process's own limits at `share` of each global limit (1 / number of replicas), `closed`
answers 429 at once; Redis is tried again a second later, so recovery is automatic.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, Decimal
from typing import Any

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from tokenway.domain.types import Principal
from tokenway.errors import BudgetExceeded, RateLimited
from tokenway.limits.budget import BudgetBook, Payer, period_start, refusal, row_moment
from tokenway.limits.memory import Headroom, MemoryLimiter
from tokenway.limits.state import MemoryState
from tokenway.telemetry.log import log

_NANO = Decimal("1e9")
_WINDOW_MS = 60_000

# KEYS: req zset, tok zset, tok hash, tok total. ARGV: rpm|-1, tpm|-1, id, est tokens.
_ADMIT_RATE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cutoff = now - 60000
local rpm, tpm, id, est = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local nreq, total = -1, -1
if rpm >= 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', cutoff)
  nreq = redis.call('ZCARD', KEYS[1])
  if nreq + 1 > rpm then
    local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    return {0, 1, tonumber(first[2]) + 60000 - now, nreq, -1}
  end
end
if tpm >= 0 then
  local old = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', cutoff)
  if #old > 0 then
    local amounts = redis.call('HMGET', KEYS[3], unpack(old))
    local sum = 0
    for _, a in ipairs(amounts) do if a then sum = sum + tonumber(a) end end
    redis.call('DECRBY', KEYS[4], sum)
    redis.call('HDEL', KEYS[3], unpack(old))
    redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', cutoff)
  end
  total = tonumber(redis.call('GET', KEYS[4]) or '0')
  if total + est > tpm and total > 0 then
    local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
    return {0, 2, tonumber(first[2]) + 60000 - now, nreq, total}
  end
  redis.call('ZADD', KEYS[2], now, id)
  redis.call('HSET', KEYS[3], id, est)
  total = redis.call('INCRBY', KEYS[4], est)
  for i = 2, 4 do redis.call('PEXPIRE', KEYS[i], 61000) end
end
if rpm >= 0 then
  redis.call('ZADD', KEYS[1], now, id)
  redis.call('PEXPIRE', KEYS[1], 61000)
  nreq = nreq + 1
end
return {1, 0, 0, nreq, total}
"""

# KEYS: tok hash, tok total. ARGV: id, actual tokens.
_SETTLE_RATE = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old then
  local delta = tonumber(ARGV[2]) - tonumber(old)
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  redis.call('INCRBY', KEYS[2], delta)
end
return 0
"""

# KEYS: the hold, then account hashes. ARGV: worst (nano), hold ttl s, then per account:
# budget (nano), hard, ttl s (0: none). The hold records that this reservation awaits
# settlement, so that a settlement retried after a lost reply is applied once.
_ADMIT_BUDGET = """
local worst = tonumber(ARGV[1])
local soft = {}
for i = 2, #KEYS do
  local a = i - 1
  local budget, hard = tonumber(ARGV[a * 3]), ARGV[a * 3 + 1]
  local v = redis.call('HMGET', KEYS[i], 'spent', 'reserved')
  local used = tonumber(v[1] or '0') + tonumber(v[2] or '0')
  if used + worst > budget then
    if hard == '1' then return {0, a} end
    soft[#soft + 1] = a
  end
end
for i = 2, #KEYS do
  local a = i - 1
  redis.call('HSETNX', KEYS[i], 'seeded', 1)
  redis.call('HINCRBY', KEYS[i], 'reserved', worst)
  local ttl = tonumber(ARGV[a * 3 + 2])
  if ttl > 0 then redis.call('EXPIRE', KEYS[i], ttl) end
end
redis.call('SET', KEYS[1], worst, 'EX', tonumber(ARGV[2]))
local out = {1}
for _, a in ipairs(soft) do out[#out + 1] = a end
return out
"""

# KEYS: the hold, then account hashes. ARGV: reserved (nano), actual (nano). A hold already
# settled (or never admitted) changes nothing: settling is idempotent.
_SETTLE_BUDGET = """
if redis.call('DEL', KEYS[1]) == 0 then return 0 end
for i = 2, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    redis.call('HINCRBY', KEYS[i], 'reserved', -tonumber(ARGV[1]))
    redis.call('HINCRBY', KEYS[i], 'spent', tonumber(ARGV[2]))
  end
end
return 1
"""

# KEYS: account hash. ARGV: spent (nano), ttl s. Seeds an account once, whoever starts first.
_SEED_BUDGET = """
if redis.call('HSETNX', KEYS[1], 'seeded', 1) == 1 then
  redis.call('HINCRBY', KEYS[1], 'spent', tonumber(ARGV[1]))
  if tonumber(ARGV[2]) > 0 then redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2])) end
  return 1
end
return 0
"""


def nano_up(amount: Decimal) -> int:
    """Integer nano-dollars, rounded up (a reservation must never be smaller than its cost)."""
    return int((amount * _NANO).to_integral_value(rounding=ROUND_CEILING))


class _RateHold(msgspec.Struct):
    id: str
    redis: bool
    local: Any = None


class _BudgetHold(msgspec.Struct):
    keys: list[str]
    """The hold's key, then the accounts' (empty for a hold on the local fallback)."""
    reserved: int
    local: Any = None


_HOLD_TTL_S = 7 * 86_400  # a hold outlives any settlement retry; its accounts' own TTLs rule
_MAX_PENDING = 100_000


class RedisState:
    """Rate limits and budgets on Redis, with a local fallback for outages."""

    def __init__(
        self,
        url: str,
        budgets: BudgetBook,
        *,
        prefix: str = "tokenway:",
        timeout_s: float = 1.0,
        policy: str = "open",
        share: float = 1.0,
        warn: Any = None,
    ) -> None:
        self.url, self.prefix, self.timeout_s = url, prefix, timeout_s
        self.policy, self.share = policy, share
        self.book = budgets
        self._warn = warn
        # A bounded pool that makes a burst wait for a connection (within the timeout) rather
        # than fail: a handful of connections carries thousands of short scripts per second.
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=32,
            timeout=timeout_s,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
        )
        self._pool = pool
        self._redis: aioredis.Redis = aioredis.Redis(connection_pool=pool)
        self._admit_rate = self._redis.register_script(_ADMIT_RATE)
        self._settle_rate = self._redis.register_script(_SETTLE_RATE)
        self._admit_budget = self._redis.register_script(_ADMIT_BUDGET)
        self._settle_budget = self._redis.register_script(_SETTLE_BUDGET)
        self._seed_budget = self._redis.register_script(_SEED_BUDGET)
        self.local = MemoryState(MemoryLimiter(), budgets)
        self._down_until = 0.0
        self.failures = 0
        # Settlements Redis did not take, retried until it does: a reservation left in place
        # would hold budget that was never spent until its period ended.
        self._pending: dict[str, list[Any]] = {}
        self._retrying: asyncio.Task[None] | None = None

    async def start(self) -> None:
        try:
            async with asyncio.timeout(max(self.timeout_s, 2.0)):
                await self._redis.ping()
        except (RedisError, OSError, TimeoutError) as exc:
            self._down(exc)

    async def close(self) -> None:
        if self._retrying is not None:
            self._retrying.cancel()
        if self._pending:
            await self._settle_pending()
        if self._pending:
            log.error(
                "budget settlements not applied at shutdown",
                extra={"fields": {"count": len(self._pending)}},
            )
        await self._redis.aclose()
        await self._pool.aclose()

    # ---- availability -----------------------------------------------------------------

    def _up(self) -> bool:
        return time.monotonic() >= self._down_until

    def _down(self, exc: BaseException) -> None:
        self.failures += 1
        if self._up():
            log.warning(
                "shared state unavailable",
                extra={"fields": {"policy": self.policy, "error": type(exc).__name__}},
            )
        # Requests do not each wait for a dead server: Redis is tried again a second later.
        self._down_until = time.monotonic() + 1.0

    def _closed(self) -> RateLimited:
        return RateLimited(
            "The gateway's shared state is unavailable; retry shortly.", retry_after_s=1.0
        )

    async def _call(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        async with asyncio.timeout(self.timeout_s):
            return await script(keys=keys, args=args)

    # ---- rate limits ------------------------------------------------------------------

    def _local_principal(self, p: Principal) -> Principal:
        def part(n: int | None) -> int | None:
            return None if n is None else max(1, math.floor(n * self.share))

        return msgspec.structs.replace(p, rpm=part(p.rpm), tpm=part(p.tpm))

    async def admit_rate(self, p: Principal, est_tokens: int) -> tuple[Headroom, Any]:
        if p.rpm is None and p.tpm is None:
            return Headroom(), None
        if self._up():
            k = f"{self.prefix}rl:{p.name}:"
            hold = _RateHold(uuid.uuid4().hex, True)
            args = [
                p.rpm if p.rpm is not None else -1,
                p.tpm if p.tpm is not None else -1,
                hold.id,
                est_tokens,
            ]
            try:
                ok, which, retry_ms, nreq, total = await self._call(
                    self._admit_rate, [k + "req", k + "tok", k + "amt", k + "total"], args
                )
            except (RedisError, OSError, TimeoutError) as exc:
                self._down(exc)
            else:
                if not ok:
                    what = (
                        f"{p.rpm} requests per minute"
                        if which == 1
                        else f"{p.tpm} tokens per minute"
                    )
                    raise RateLimited(
                        f"Rate limit reached for key '{p.name}': {what}.",
                        retry_after_s=max(0.0, retry_ms / 1000.0),
                    )
                room = Headroom()
                if p.rpm is not None:
                    room.limit_requests, room.remaining_requests = p.rpm, max(0, p.rpm - nreq)
                if p.tpm is not None:
                    room.limit_tokens, room.remaining_tokens = p.tpm, max(0, p.tpm - total)
                return room, hold
        if self.policy == "closed":
            raise self._closed()
        room, held = await self.local.admit_rate(self._local_principal(p), est_tokens)
        return room, _RateHold("", False, held)

    async def settle_rate(self, p: Principal, held: Any, actual_tokens: int) -> None:
        if not isinstance(held, _RateHold):
            return
        if not held.redis:
            await self.local.settle_rate(self._local_principal(p), held.local, actual_tokens)
            return
        if p.tpm is None:
            return
        k = f"{self.prefix}rl:{p.name}:"
        try:
            await self._call(self._settle_rate, [k + "amt", k + "total"], [held.id, actual_tokens])
        except (RedisError, OSError, TimeoutError) as exc:
            self._down(exc)  # the reservation keeps its estimate and leaves the window in 60 s

    # ---- budgets ----------------------------------------------------------------------

    def covers(self, payer: Payer) -> bool:
        return self.book.covers(payer)

    def _account_key(self, account: str, period: datetime | None) -> str:
        stamp = "total" if period is None else period.strftime("%Y%m%d")
        return f"{self.prefix}budget:{account}:{stamp}"

    @staticmethod
    def _ttl(kind: str, period: datetime | None) -> int:
        if period is None:
            return 0
        end = period + timedelta(days=1)
        if kind == "month":
            end = (period + timedelta(days=32)).replace(day=1)
        return int((end - datetime.now(UTC)).total_seconds()) + 86_400

    async def admit_budget(self, payer: Payer, worst_case: Decimal) -> Any:
        plan = self.book.plan(payer)
        if not plan:
            return None
        if self._up():
            now = datetime.now(UTC)
            keys: list[str] = [f"{self.prefix}hold:{uuid.uuid4().hex}"]
            args: list[Any] = [nano_up(worst_case), _HOLD_TTL_S]
            for account, _label, limit in plan:
                period = period_start(limit.period, now)
                keys.append(self._account_key(account, period))
                args += [
                    nano_up(limit.usd),
                    1 if limit.hard else 0,
                    self._ttl(limit.period, period),
                ]
            try:
                out = await self._call(self._admit_budget, keys, args)
            except (RedisError, OSError, TimeoutError) as exc:
                self._down(exc)
            else:
                if not out[0]:
                    _account, label, limit = plan[int(out[1]) - 1]
                    raise BudgetExceeded(refusal(label, limit, worst_case))
                for i in out[1:]:
                    account, label, limit = plan[int(i) - 1]
                    if self._warn is not None:
                        self._warn(account, f"{label} has passed its {limit.period} budget.")
                return _BudgetHold(keys, nano_up(worst_case))
        if self.policy == "closed":
            raise self._closed()
        return _BudgetHold([], 0, await self.local.admit_budget(payer, worst_case))

    async def settle_budget(self, holds: Any, actual: Decimal) -> None:
        if not isinstance(holds, _BudgetHold):
            return
        if not holds.keys:
            await self.local.settle_budget(holds.local, actual)
            return
        args = [holds.reserved, nano_up(actual)]
        try:
            await self._call(self._settle_budget, holds.keys, args)
            return
        except (RedisError, OSError, TimeoutError) as exc:
            self._down(exc)
        if len(self._pending) >= _MAX_PENDING:
            log.error("budget settlement lost", extra={"fields": {"accounts": holds.keys[1:]}})
            return
        self._pending[holds.keys[0]] = [holds.keys, args]
        if self._retrying is None or self._retrying.done():
            self._retrying = asyncio.create_task(self._retry_pending())

    async def _retry_pending(self) -> None:
        while self._pending:
            await asyncio.sleep(max(0.2, self._down_until - time.monotonic()))
            await self._settle_pending()

    async def _settle_pending(self) -> None:
        for hold, (keys, args) in list(self._pending.items()):
            try:
                await self._call(self._settle_budget, keys, args)
            except (RedisError, OSError, TimeoutError) as exc:
                self._down(exc)
                return
            del self._pending[hold]

    @property
    def pending_settlements(self) -> int:
        """Settlements waiting for Redis to come back."""
        return len(self._pending)

    def seed(self, rows: Iterable[dict[str, Any]]) -> None:
        """Budget spend from the ledger is seeded by `seed_async` (it needs the server)."""
        self._rows = list(rows)

    async def seed_async(self) -> None:
        """Seed each account's current-period spend from the ledger, once across replicas."""
        rows = getattr(self, "_rows", [])
        now = datetime.now(UTC)
        ttls: dict[str, int] = {}
        spent: dict[str, Decimal] = {}
        for row in rows:
            key, cost = row.get("key"), row.get("cost_usd")
            if not key or cost is None:
                continue
            team = row.get("team") or self.book.teams_of(key)
            ts = row_moment(row.get("ts"))
            for account, _label, limit in self.book.plan(Payer(key, team, row.get("end_user"))):
                period = period_start(limit.period, now)
                if period is not None and isinstance(ts, datetime) and ts < period:
                    continue
                rk = self._account_key(account, period)
                spent[rk] = spent.get(rk, Decimal(0)) + Decimal(cost)
                ttls[rk] = self._ttl(limit.period, period)
        for rk, amount in spent.items():
            try:
                await self._call(self._seed_budget, [rk], [nano_up(amount), ttls[rk]])
            except (RedisError, OSError, TimeoutError) as exc:
                self._down(exc)
                return

"""Breaker ejections and learned provider headroom shared between replicas through Redis.

The hot path stays local: each replica decides with its own breakers and headroom. What one
replica learns (a target ejected for 4 s, a provider out of requests until its reset) it
publishes as a Redis key that expires when the ejection or block ends, set by a script that
only ever extends it; every replica polls those keys a few times a second and adopts what it
does not know yet. A dead Redis costs nothing but the sharing: replicas go on alone.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from tokenway.routing.state import RoutingState
from tokenway.telemetry.log import log

# KEYS[1]; ARGV: ms, value. Extend the key's life to `ms` from now, never shorten it.
_EXTEND = """
local ttl = redis.call('PTTL', KEYS[1])
if ttl < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', tonumber(ARGV[1]))
end
return 0
"""


class SharedRouting:
    """Publishes this replica's ejections and blocks, and adopts the others'."""

    def __init__(
        self,
        url: str,
        prefix: str,
        state: RoutingState,
        labels: list[str],
        interval_s: float = 0.2,
    ) -> None:
        self._redis: aioredis.Redis = aioredis.Redis.from_url(
            url, socket_timeout=0.5, socket_connect_timeout=0.5
        )
        self._extend = self._redis.register_script(_EXTEND)
        self.prefix, self.state, self.labels = prefix, state, sorted(set(labels))
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._pending: set[asyncio.Task[Any]] = set()
        self._warned = False
        state.on_eject = self._publish_ejection
        state.headroom.on_block = self._publish_block

    def _key(self, kind: str, label: str) -> str:
        return f"{self.prefix}route:{kind}:{label}"

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def _publish_ejection(self, label: str, seconds: float, ejections: int) -> None:
        self._spawn(self._set("eject", label, seconds, ejections))

    def _publish_block(self, label: str, seconds: float) -> None:
        self._spawn(self._set("block", label, seconds, 1))

    async def _set(self, kind: str, label: str, seconds: float, value: int) -> None:
        ms = max(1, int(seconds * 1000))
        try:
            await self._extend(keys=[self._key(kind, label)], args=[ms, value])
        except (RedisError, OSError, TimeoutError) as exc:
            self._trouble(exc)

    def _trouble(self, exc: BaseException) -> None:
        if not self._warned:
            self._warned = True
            log.warning(
                "routing state not shared (Redis unavailable)",
                extra={"fields": {"error": type(exc).__name__}},
            )

    async def refresh(self) -> None:
        """Adopt every live ejection and block of the other replicas (one round trip)."""
        pipe = self._redis.pipeline(transaction=False)
        for label in self.labels:
            for kind in ("eject", "block"):
                key = self._key(kind, label)
                pipe.pttl(key)
                pipe.get(key)
        try:
            out = await pipe.execute()
        except (RedisError, OSError, TimeoutError) as exc:
            self._trouble(exc)
            return
        self._warned = False
        it = iter(out)
        for label in self.labels:
            for kind in ("eject", "block"):
                ttl, value = next(it), next(it)
                if not isinstance(ttl, int) or ttl <= 0:
                    continue
                if kind == "eject":
                    self.state.breakers.adopt(label, ttl / 1000.0, int(value or 1))
                else:
                    self.state.headroom.block(label, ttl / 1000.0, shared=True)

    async def _loop(self) -> None:
        me = asyncio.current_task()
        while not self._closing:
            await self.refresh()
            # A cancel that lands inside a Redis call can come out of redis-py as a
            # TimeoutError, which refresh() takes for an outage: honour it here, or close()
            # would wait for this loop forever.
            if me is not None and me.cancelling():
                raise asyncio.CancelledError
            await asyncio.sleep(self.interval_s)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def close(self) -> None:
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for task in list(self._pending):
            task.cancel()
        await asyncio.gather(*self._pending, return_exceptions=True)
        await self._redis.aclose()

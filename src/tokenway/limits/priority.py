"""Priority under scarcity: a model's concurrent requests are capped, and classes share the cap
unequally, so that when capacity is short high-priority work goes through.

Each key has a class, `high`, `normal` (the default) or `low`. A model with `capacity:
{max_in_flight: N}` admits a request only while fewer than `share x N` requests are in flight,
where the share is 1.0 for high, 0.8 for normal and 0.5 for low: the last fifth of the slots is
for high priority alone, the last half is closed to low priority. A request that finds no slot
waits in a bounded queue (best class first, then first come) for at most `max_wait_ms` (high
priority: until its deadline); a full queue sheds the newcomer, or the worst waiter when the
newcomer is of a better class; a wait that runs out sheds it with 429 and `Retry-After`.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math

from tokenway.errors import RateLimited

RANKS = {"high": 0, "normal": 1, "low": 2}
SHARES = {"high": 1.0, "normal": 0.8, "low": 0.5}


class Slot:
    """A held place among a model's in-flight requests; `release` it exactly once."""

    __slots__ = ("_gate", "_released")

    def __init__(self, gate: PriorityGate | None) -> None:
        self._gate, self._released = gate, False

    def release(self) -> None:
        if self._gate is not None and not self._released:
            self._released = True
            self._gate._leave()


FREE = Slot(None)


class PriorityGate:
    """In-flight cap for one model, shared by priority class."""

    def __init__(self, max_in_flight: int, queue: int, max_wait_s: float) -> None:
        self.limit = max_in_flight
        self.queue_limit = queue
        self.max_wait_s = max_wait_s
        self.in_flight = 0
        self.shed = 0
        self._caps = {c: max(1, math.floor(s * max_in_flight)) for c, s in SHARES.items()}
        self._waiters: list[tuple[int, int, str, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    @property
    def waiting(self) -> int:
        """Requests queued for a slot (background work yields to them)."""
        return len(self._waiters)

    def _fits(self, cls: str) -> bool:
        return self.in_flight < self._caps[cls]

    async def enter(self, cls: str, max_wait_s: float | None = None) -> Slot:
        """A slot for a request of class `cls`, or `RateLimited` when it is shed."""
        rank = RANKS[cls]
        if self._fits(cls) and not any(w[0] <= rank for w in self._waiters):
            self.in_flight += 1
            return Slot(self)
        if len(self._waiters) >= self.queue_limit:
            worst = max(self._waiters, default=None)
            if worst is None or worst[0] <= rank:
                self.shed += 1
                raise self._refusal(cls)
            # A better class takes the queue place of the worst waiter, which is shed.
            self._waiters.remove(worst)
            heapq.heapify(self._waiters)
            self.shed += 1
            worst[3].set_exception(self._refusal(worst[2]))
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (rank, next(self._seq), cls, fut)
        heapq.heappush(self._waiters, entry)
        # High priority waits as long as its deadline allows; the others at most max_wait.
        wait = self.max_wait_s if cls != "high" else (max_wait_s or self.max_wait_s)
        if max_wait_s is not None:
            wait = min(wait, max_wait_s)
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout=max(wait, 0.0))
        except TimeoutError:
            if _granted(fut):  # granted just as the wait ran out: keep the slot
                return Slot(self)
            self._drop(entry)
            self.shed += 1
            raise self._refusal(cls) from None
        except asyncio.CancelledError:
            if _granted(fut):
                self._leave()
            else:
                self._drop(entry)
            raise
        return Slot(self)

    def _drop(self, entry: tuple[int, int, str, asyncio.Future[None]]) -> None:
        if entry in self._waiters:
            self._waiters.remove(entry)
            heapq.heapify(self._waiters)

    def _leave(self) -> None:
        self.in_flight -= 1
        self._grant()

    def _grant(self) -> None:
        # Wake the best waiters that fit. The head is the best class waiting, so when it does
        # not fit, no lower class behind it (with a smaller share) would either.
        while self._waiters:
            _, _, cls, fut = self._waiters[0]
            if fut.done():
                heapq.heappop(self._waiters)
                continue
            if not self._fits(cls):
                return
            heapq.heappop(self._waiters)
            self.in_flight += 1
            fut.set_result(None)

    def _refusal(self, cls: str) -> RateLimited:
        return RateLimited(
            f"The model is at capacity for {cls}-priority requests; retry shortly.",
            retry_after_s=max(1.0, self.max_wait_s),
        )


def _granted(fut: asyncio.Future[None]) -> bool:
    return fut.done() and not fut.cancelled() and fut.exception() is None

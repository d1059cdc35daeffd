"""When background work (batch lines) may start, so that interactive traffic keeps its SLA.

Two signals, both local to the replica and cheap to read:

- a model's capacity gate (`models[].capacity`) has requests queued for a slot: interactive work
  is already waiting there, so no batch line for that model starts until the queue is empty
  (lines that are admitted still take the gate's low-priority share, half the slots at most);
- the event loop lags: a timer that should fire every `interval_s` fired more than
  `yield_lag_s` late in the last half second, so this process is short of CPU and one more line
  would slow every interactive request it serves; batch work then narrows to one line at a
  time (never zero, so a batch still finishes on a machine that is always busy).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Mapping

from tokenway.limits.priority import PriorityGate

__all__ = ["Throttle"]


class Throttle:
    """The load signals the batch runner yields to."""

    def __init__(
        self, gates: Mapping[str, PriorityGate], yield_lag_s: float, interval_s: float = 0.05
    ) -> None:
        self._gates = gates
        self._threshold = yield_lag_s
        self._interval = interval_s
        self._samples: deque[float] = deque(maxlen=max(1, round(0.5 / interval_s)))
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._threshold > 0 and self._task is None:
            self._task = asyncio.create_task(self._watch())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def lagging(self) -> bool:
        """Whether the event loop ran late lately."""
        return bool(self._samples) and max(self._samples) > self._threshold

    def contended(self, model: str | None) -> bool:
        """Whether interactive requests queue for `model`'s capacity."""
        gate = self._gates.get(model) if model is not None else None
        return gate is not None and gate.waiting > 0

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            t = loop.time()
            await asyncio.sleep(self._interval)
            self._samples.append(max(0.0, loop.time() - t - self._interval))

"""Deadlines, backoff and the retry budget: all of a request's re-attempt policy in one place.

Every attempt after a request's first, on the same target or another, is a re-attempt and
needs the budget's leave: re-attempts may be at most `ratio` of the requests seen over the last
`window_s` seconds, except that up to `floor` re-attempts may always be in flight at once (so
failing over from a dead primary is never starved; the floor's re-attempts count against the
ratio too). An outage under load thus costs at most `(1 + ratio)` upstream calls per request,
or `floor` re-attempts at a time where that is more, never a retry storm.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable


class Deadline:
    """The moment a request must be answered by, on `clock` (monotonic seconds)."""

    __slots__ = ("_clock", "at")

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.at = clock() + seconds

    def left(self, clock: Callable[[], float] | None = None) -> float:
        """Seconds until the deadline (negative once past), on the deadline's own clock
        unless `clock` is given: `at` means nothing on another clock."""
        return self.at - (clock or self._clock)()


def backoff_s(round_: int, retry_after_s: float | None, base_s: float = 0.05) -> float:
    """Pause before re-attempt round `round_` (1, 2, ...): exponential with full jitter, but
    never shorter than the provider's `Retry-After`."""
    wait = random.uniform(0, base_s * 2 ** (round_ - 1))
    return max(wait, retry_after_s or 0.0)


class RetryBudget:
    """Shared by all requests of a gateway process."""

    def __init__(
        self,
        ratio: float = 0.2,
        floor: int = 3,
        window_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ratio, self.floor, self.window_s = ratio, floor, window_s
        self._clock = clock
        self._requests: deque[float] = deque()
        self._retries: deque[float] = deque()
        self.in_flight = 0
        self.denied = 0

    def _trim(self, now: float) -> None:
        horizon = now - self.window_s
        for q in (self._requests, self._retries):
            while q and q[0] < horizon:
                q.popleft()

    def request(self) -> None:
        """Count a client request (its first attempt is free)."""
        self._requests.append(self._clock())

    def try_acquire(self) -> bool:
        """Leave for one re-attempt; `release` it when the attempt ends."""
        now = self._clock()
        self._trim(now)
        if self.in_flight < self.floor or len(self._retries) < self.ratio * len(self._requests):
            self._retries.append(now)
            self.in_flight += 1
            return True
        self.denied += 1
        return False

    def release(self) -> None:
        self.in_flight -= 1

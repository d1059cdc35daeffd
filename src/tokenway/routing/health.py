"""Outlier detection per target, as a circuit breaker.

A target is ejected after `consecutive` failures in a row, or when at least `min_requests`
attempts over the last `window_s` seconds failed at a rate of `error_rate` or more. The first
ejection lasts `base_s`; each further one in a row doubles it, up to `max_s`. When it ends the
target is half-open: one probe attempt at a time goes through; a success closes the breaker
(and forgets the ejection count), a failure ejects it again for longer.

Only failures that say something about the target count: connection errors, timeouts and 5xx
answers. A 429 is a capacity signal (see `headroom`), a 4xx is the request's fault.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from tokenway.config.schema import BreakerSettings


class _State:
    __slots__ = ("ejections", "outcomes", "probing", "streak", "until")

    def __init__(self) -> None:
        self.streak = 0
        self.ejections = 0
        self.until = 0.0  # ejected while now < until
        self.probing = False
        self.outcomes: deque[tuple[float, bool]] = deque()


class Breakers:
    """Breaker state for every target, keyed by the target's label."""

    def __init__(
        self,
        cfg: BreakerSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_eject: Callable[[str, float], None] | None = None,
    ) -> None:
        self.cfg = cfg or BreakerSettings()
        self._clock = clock
        self._on_eject = on_eject
        self._states: dict[str, _State] = {}

    def _state(self, label: str) -> _State:
        st = self._states.get(label)
        if st is None:
            st = self._states[label] = _State()
        return st

    def ejections(self, label: str) -> int:
        """Ejections of `label` in a row so far (0: closed)."""
        st = self._states.get(label)
        return 0 if st is None else st.ejections

    def ejected_for(self, label: str) -> float:
        """Seconds until `label` may be tried again; 0 when it may be tried now."""
        st = self._states.get(label)
        if st is None or st.ejections == 0:
            return 0.0
        left = st.until - self._clock()
        if left > 0:
            return left
        return 0.0 if not st.probing else self.cfg.base_s

    def acquire(self, label: str) -> bool:
        """Whether an attempt may go to `label` now; in half-open state this claims the one
        probe, which `success`, `failure` or `release` gives back."""
        st = self._states.get(label)
        if st is None or st.ejections == 0:
            return True
        if st.until > self._clock() or st.probing:
            return False
        st.probing = True
        return True

    def adopt(self, label: str, seconds: float, ejections: int) -> None:
        """Take over an ejection another replica decided (shared state): eject `label` for
        `seconds` unless it is ejected here already."""
        st = self._state(label)
        now = self._clock()
        if seconds <= 0 or (st.ejections and st.until > now):
            return
        st.ejections = max(st.ejections, ejections, 1)
        st.until, st.probing, st.streak = now + seconds, False, 0

    def release(self, label: str) -> None:
        """An acquired attempt that was never sent."""
        st = self._states.get(label)
        if st is not None:
            st.probing = False

    def success(self, label: str) -> None:
        """An attempt at `label` succeeded: in half-open state, the breaker closes."""
        st = self._state(label)
        now = self._note(st, True)
        if st.ejections and st.until > now and not st.probing:
            # An attempt sent before the ejection (a long stream, say): it does not show that
            # new attempts would succeed, and closing here would reset the backoff's doubling.
            return
        st.streak, st.ejections, st.probing = 0, 0, False

    def failure(self, label: str) -> None:
        """An attempt at `label` failed in a way that says the target is unhealthy."""
        st = self._state(label)
        now = self._note(st, False)
        if st.ejections and st.until > now and not st.probing:
            return  # an attempt sent before the ejection: the breaker already knows
        st.streak += 1
        if st.probing or st.streak >= self.cfg.consecutive or self._rate_tripped(st):
            self._eject(label, st, now)

    def _note(self, st: _State, ok: bool) -> float:
        now = self._clock()
        st.outcomes.append((now, ok))
        horizon = now - self.cfg.window_s
        while st.outcomes and st.outcomes[0][0] < horizon:
            st.outcomes.popleft()
        return now

    def _rate_tripped(self, st: _State) -> bool:
        n = len(st.outcomes)
        if n < self.cfg.min_requests:
            return False
        failed = sum(1 for _, ok in st.outcomes if not ok)
        return failed / n >= self.cfg.error_rate

    def _eject(self, label: str, st: _State, now: float) -> None:
        st.ejections += 1
        interval = min(self.cfg.base_s * 2 ** (st.ejections - 1), self.cfg.max_s)
        st.until, st.probing, st.streak = now + interval, False, 0
        st.outcomes.clear()
        if self._on_eject is not None:
            self._on_eject(label, interval)

"""Sliding-window request and token limits of a simulated provider (a 60 s window)."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class LimitSnapshot:
    """The limits after a decision; `reset_*_s` is the time until the window is empty again."""

    rpm: int | None
    tpm: int | None
    remaining_requests: int
    remaining_tokens: int
    reset_requests_s: float
    reset_tokens_s: float


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after_s: float
    exceeded: str | None  # "requests" or "tokens" when refused
    snapshot: LimitSnapshot


class SlidingWindow:
    """Admits a request when the last `window_s` seconds leave room for it under rpm and tpm.

    Only admitted requests count against the window.
    """

    def __init__(self, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.window_s = window_s
        self._clock = clock
        self._entries: deque[tuple[float, int]] = deque()
        self._tokens = 0

    def _prune(self, now: float) -> None:
        while self._entries and self._entries[0][0] <= now - self.window_s:
            self._tokens -= self._entries.popleft()[1]

    def admit(self, rpm: int | None, tpm: int | None, tokens: int) -> Decision:
        """Decide on a request of `tokens` tokens, and record it if allowed."""
        now = self._clock()
        self._prune(now)
        entries = self._entries
        retry, exceeded = 0.0, None
        if rpm is not None and len(entries) >= rpm:
            # Enough of the oldest must leave that one more request fits.
            oldest_needed = entries[len(entries) - rpm][0] if rpm > 0 else now
            retry, exceeded = oldest_needed + self.window_s - now, "requests"
        if tpm is not None and self._tokens + tokens > tpm:
            exceeded = exceeded or "tokens"
            wait = self.window_s
            if tokens <= tpm:
                left = self._tokens
                for t, n in entries:
                    left -= n
                    if left + tokens <= tpm:
                        wait = t + self.window_s - now
                        break
            # Both limits must have room: wait for the later of the two.
            retry = max(retry, wait)
        if exceeded is None:
            entries.append((now, tokens))
            self._tokens += tokens
        # `t + window - now` can come out a hair over the window in floating point
        retry = min(max(0.0, retry), self.window_s)
        return Decision(exceeded is None, retry, exceeded, self._snapshot(rpm, tpm, now))

    def peek(self, rpm: int | None, tpm: int | None) -> LimitSnapshot:
        """The current state without deciding on a request."""
        now = self._clock()
        self._prune(now)
        return self._snapshot(rpm, tpm, now)

    def _snapshot(self, rpm: int | None, tpm: int | None, now: float) -> LimitSnapshot:
        reset = self._entries[-1][0] + self.window_s - now if self._entries else 0.0
        reset = min(max(0.0, reset), self.window_s)
        return LimitSnapshot(
            rpm=rpm,
            tpm=tpm,
            remaining_requests=max(0, rpm - len(self._entries)) if rpm is not None else 0,
            remaining_tokens=max(0, tpm - self._tokens) if tpm is not None else 0,
            reset_requests_s=reset,
            reset_tokens_s=reset,
        )


def go_duration(seconds: float) -> str:
    """`seconds` as OpenAI writes rate-limit resets: `20ms`, `1.5s`, `6m0s`."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    if seconds < 60:
        return f"{round(seconds, 3):g}s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{round(rest, 3):g}s"

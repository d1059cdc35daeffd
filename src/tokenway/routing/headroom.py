"""How much a target can still take before it answers 429, from two sources:

- configured budgets (`providers[].limits` and `targets[].limits`: rpm, tpm), counted here over
  a sliding minute;
- what providers say: OpenAI's `x-ratelimit-remaining-{requests,tokens}` with
  `x-ratelimit-reset-*` (Go durations such as `1m2.5s`, `120ms`), Anthropic's
  `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{remaining,reset}` (RFC 3339
  instants), and `retry-after` (or Gemini's `RetryInfo` delay) on a 429.

A target with no room is skipped by the router until the provider's reset time, so a busy
provider is spilled from instead of collecting 429s.
"""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Callable, Mapping
from datetime import datetime

from tokenway.providers.transport import parse_retry_after

# Go prints sub-millisecond durations in µs (micro sign or Greek mu) and ns.
_GO_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|\u00b5s|\u03bcs|ms|h|m|s)")
_GO_UNIT = {
    "ns": 1e-9,
    "us": 1e-6,
    "\u00b5s": 1e-6,
    "\u03bcs": 1e-6,
    "ms": 0.001,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
# When a provider says a limit is spent but not when it resets, wait this long.
_DEFAULT_RESET_S = 1.0
_MAX_BLOCK_S = 120.0


def go_duration_s(text: str) -> float | None:
    """Seconds of a Go-style duration (`6m0s`, `1.5s`, `250ms`), or None if malformed."""
    text = text.strip()
    parts = _GO_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        try:
            return max(0.0, float(text))
        except ValueError:
            return None
    return sum(float(n) * _GO_UNIT[u] for n, u in parts)


def _reset_s(value: str | None, wall: float) -> float | None:
    if not value:
        return None
    if "T" in value:  # an RFC 3339 instant (Anthropic)
        try:
            return max(0.0, datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() - wall)
        except ValueError:
            return None
    return go_duration_s(value)


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(float(value))
    except (ValueError, OverflowError):  # "inf" parses as a float but is no count
        return None


class _Window:
    """Requests and tokens sent over the last minute, for a configured rpm/tpm."""

    __slots__ = ("events", "rpm", "tokens", "tpm")

    def __init__(self, rpm: int | None, tpm: int | None) -> None:
        self.rpm, self.tpm = rpm, tpm
        self.events: deque[tuple[float, int]] = deque()
        self.tokens = 0

    def _trim(self, now: float) -> None:
        while self.events and self.events[0][0] <= now - 60.0:
            self.tokens -= self.events.popleft()[1]

    def room(self, now: float, tokens: int) -> bool:
        self._trim(now)
        if self.rpm is not None and len(self.events) >= self.rpm:
            return False
        return self.tpm is None or not self.events or self.tokens + tokens <= self.tpm

    def take(self, now: float, tokens: int) -> None:
        self.events.append((now, tokens))
        self.tokens += tokens


class Headroom:
    """Per-target room to send, by label (`provider/model`); providers' configured limits are
    shared by all targets of that provider."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._clock, self._wall = clock, wall
        self._blocked: dict[str, float] = {}  # label -> monotonic time it opens again
        self._tokens_left: dict[str, tuple[int, float]] = {}  # label -> (remaining, until)
        self._windows: dict[str, _Window] = {}
        # Told of every block learned here, so that other replicas learn it too.
        self.on_block: Callable[[str, float], None] | None = None

    def configure(self, name: str, rpm: int | None, tpm: int | None) -> None:
        """A configured budget for a provider (`name` = provider) or a target (its label)."""
        if rpm is not None or tpm is not None:
            self._windows[name] = _Window(rpm, tpm)

    def wait_s(self, label: str, provider: str, tokens: int) -> float:
        """0 when `label` has room for a request of `tokens` now, else seconds to wait."""
        now = self._clock()
        until = self._blocked.get(label, 0.0)
        if until > now:
            return until - now
        left = self._tokens_left.get(label)
        if left is not None and left[1] > now and tokens > left[0]:
            return left[1] - now
        for name in (label, provider):
            w = self._windows.get(name)
            if w is not None and not w.room(now, tokens):
                return 1.0 if not w.events else max(0.05, w.events[0][0] + 60.0 - now)
        return 0.0

    def take(self, label: str, provider: str, tokens: int) -> None:
        """Count a request sent (configured budgets only)."""
        now = self._clock()
        for name in (label, provider):
            w = self._windows.get(name)
            if w is not None:
                w.take(now, tokens)

    def observe(self, label: str, status: int, headers: Mapping[str, str]) -> None:
        """Learn from a provider's answer (any status) what room is left."""
        now, wall = self._clock(), self._wall()
        block = 0.0
        if status == 429:
            retry = parse_retry_after(headers)
            block = retry if retry is not None else _DEFAULT_RESET_S
        for prefix in ("x-ratelimit-", "anthropic-ratelimit-"):
            req_left = _int(
                headers.get(f"{prefix}remaining-requests")
                or headers.get(f"{prefix}requests-remaining")
            )
            if req_left is not None and req_left <= 0:
                reset = _reset_s(
                    headers.get(f"{prefix}reset-requests")
                    or headers.get(f"{prefix}requests-reset"),
                    wall,
                )
                block = max(block, reset if reset is not None else _DEFAULT_RESET_S)
            tok_left = _int(
                headers.get(f"{prefix}remaining-tokens") or headers.get(f"{prefix}tokens-remaining")
            )
            if tok_left is not None:
                reset = _reset_s(
                    headers.get(f"{prefix}reset-tokens") or headers.get(f"{prefix}tokens-reset"),
                    wall,
                )
                # Capped like `block`: a far (or absurd) reset must not shut the target for hours.
                wait = min(reset, _MAX_BLOCK_S) if reset is not None else _DEFAULT_RESET_S
                until = now + wait
                self._tokens_left[label] = (tok_left, until)
                if tok_left <= 0:
                    block = max(block, until - now)
        if block > 0:
            self.block(label, block)

    def block(self, label: str, seconds: float | None, *, shared: bool = False) -> None:
        """No room on `label` for `seconds` (a 429's Retry-After; a default when unknown).
        `shared`: learned from another replica, so not published again."""
        wait = _DEFAULT_RESET_S if seconds is None else min(max(seconds, 0.0), _MAX_BLOCK_S)
        until = self._clock() + wait
        if until > self._blocked.get(label, 0.0):
            self._blocked[label] = until
            if self.on_block is not None and not shared:
                self.on_block(label, wait)

"""In-process sliding-window limits for one gateway process (the embedded default).

`rpm: N` admits at most N requests in any 60-second window; `tpm` counts prompt plus output
tokens, reserved at admission with an estimate and settled with the actual count.
"""

from __future__ import annotations

import time
from collections import deque

from tokenway.domain.types import Principal
from tokenway.errors import RateLimited

WINDOW_S = 60.0


class Headroom:
    """What a key has left, for the client's `x-ratelimit-*` headers."""

    __slots__ = ("limit_requests", "limit_tokens", "remaining_requests", "remaining_tokens")

    def __init__(self) -> None:
        self.limit_requests: int | None = None
        self.remaining_requests: int | None = None
        self.limit_tokens: int | None = None
        self.remaining_tokens: int | None = None

    def headers(self) -> list[tuple[bytes, bytes]]:
        out: list[tuple[bytes, bytes]] = []
        if self.limit_requests is not None:
            out.append((b"x-ratelimit-limit-requests", str(self.limit_requests).encode()))
            out.append((b"x-ratelimit-remaining-requests", str(self.remaining_requests).encode()))
        if self.limit_tokens is not None:
            out.append((b"x-ratelimit-limit-tokens", str(self.limit_tokens).encode()))
            out.append((b"x-ratelimit-remaining-tokens", str(self.remaining_tokens).encode()))
        return out


class Reservation:
    """Tokens taken from a key's window at admission, adjusted in place at settlement."""

    __slots__ = ("tokens", "ts")

    def __init__(self, ts: float, tokens: int) -> None:
        self.ts = ts
        self.tokens = tokens


class _Window:
    __slots__ = ("events", "total")

    def __init__(self) -> None:
        self.events: deque[Reservation] = deque()
        self.total = 0

    def trim(self, now: float) -> None:
        cutoff = now - WINDOW_S
        ev = self.events
        while ev and ev[0].ts <= cutoff:
            self.total -= ev.popleft().tokens

    def retry_after(self, now: float) -> float:
        return max(0.0, self.events[0].ts + WINDOW_S - now) if self.events else 0.0


class MemoryLimiter:
    """Per-key RPM and TPM windows. Admission is a borrow: reserve, then settle."""

    def __init__(self) -> None:
        self._req: dict[str, _Window] = {}
        self._tok: dict[str, _Window] = {}

    def admit(self, p: Principal, est_tokens: int) -> tuple[Headroom, Reservation | None]:
        """Admit a request or raise `RateLimited`. Returns headroom and the token reservation."""
        now = time.monotonic()
        room = Headroom()
        held: Reservation | None = None
        if p.rpm is not None:
            w = self._req.setdefault(p.name, _Window())
            w.trim(now)
            if w.total + 1 > p.rpm:
                raise RateLimited(
                    f"Rate limit reached for key '{p.name}': {p.rpm} requests per minute.",
                    retry_after_s=w.retry_after(now),
                )
        if p.tpm is not None:
            t = self._tok.setdefault(p.name, _Window())
            t.trim(now)
            if t.total + est_tokens > p.tpm and t.total > 0:
                raise RateLimited(
                    f"Rate limit reached for key '{p.name}': {p.tpm} tokens per minute.",
                    retry_after_s=t.retry_after(now),
                )
            held = Reservation(now, est_tokens)
            t.events.append(held)
            t.total += est_tokens
            room.limit_tokens, room.remaining_tokens = p.tpm, max(0, p.tpm - t.total)
        if p.rpm is not None:
            w.events.append(Reservation(now, 1))
            w.total += 1
            room.limit_requests, room.remaining_requests = p.rpm, max(0, p.rpm - w.total)
        return room, held

    def settle(self, p: Principal, held: Reservation | None, actual: int) -> None:
        """Replace a reservation's estimate with the actual token count."""
        if held is None or p.tpm is None:
            return
        t = self._tok.get(p.name)
        if t is None:
            return
        if held.ts > time.monotonic() - WINDOW_S:
            t.total += actual - held.tokens
            held.tokens = actual
        elif actual > held.tokens:
            # The reservation already left the window (a long stream): count what it missed.
            late = Reservation(time.monotonic(), actual - held.tokens)
            t.events.append(late)
            t.total += late.tokens

"""The simulated prefix (KV) cache: which token prefixes a provider has seen recently.

A prefix is remembered by a digest of (model, its tokens); entries expire after their TTL and
the least recently used go first when the cache is full. Which prefixes are looked up and
stored is the provider's policy (automatic block-aligned caching for OpenAI and Gemini,
explicit `cache_control` breakpoints for Anthropic) and lives with the planner.
"""

from __future__ import annotations

import hashlib
import time
from array import array
from collections import OrderedDict
from collections.abc import Iterable, Sequence

DEFAULT_CAPACITY = 100_000


def prefix_keys(model: str, tokens: Sequence[int], positions: Iterable[int]) -> dict[int, bytes]:
    """Digest of `tokens[:p]` for each position p (0 < p <= len(tokens)), by position."""
    hasher = hashlib.blake2b(model.encode() + b"\x00", digest_size=16)
    keys: dict[int, bytes] = {}
    done = 0
    for pos in sorted(set(positions)):
        if pos <= 0 or pos > len(tokens):
            continue
        hasher.update(array("q", tokens[done:pos]).tobytes())
        done = pos
        keys[pos] = hasher.copy().digest()
    return keys


class PrefixCache:
    """A bounded LRU of prefix digests with per-entry expiry (monotonic seconds)."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[bytes, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def longest_hit(self, keys: dict[int, bytes], now: float | None = None) -> int:
        """The longest position whose prefix is cached and unexpired, else 0. Does not touch."""
        now = time.monotonic() if now is None else now
        for pos in sorted(keys, reverse=True):
            entry = self._entries.get(keys[pos])
            if entry is not None and entry[0] > now:
                return pos
        return 0

    def store(self, keys: Iterable[bytes], ttl_s: float, now: float | None = None) -> None:
        """Remember (or refresh) prefixes for `ttl_s` seconds; an entry never loses TTL."""
        now = time.monotonic() if now is None else now
        for key in keys:
            old = self._entries.pop(key, None)
            ttl = max(ttl_s, old[1]) if old is not None else ttl_s
            self._entries[key] = (now + ttl, ttl)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()

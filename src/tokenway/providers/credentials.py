"""A provider's API keys, used in turn; a key that got 401 or 429 rests for a while."""

from __future__ import annotations

import time


class KeyPool:
    """Round-robin over a provider's keys, skipping rested ones.

    When every key is resting, the one that wakes first is used: refusing to send at all would
    turn a provider's hiccup into our outage.
    """

    def __init__(self, keys: list[str], *, rest_s: float = 60.0) -> None:
        self._keys = keys
        self._rest_until = [0.0] * len(keys)
        self._next = 0
        self._rest_s = rest_s

    def __len__(self) -> int:
        return len(self._keys)

    def resting(self) -> int:
        """How many keys are resting now."""
        now = time.monotonic()
        return sum(1 for t in self._rest_until if t > now)

    def values(self) -> list[str]:
        return list(self._keys)

    def pick(self) -> tuple[int, str | None]:
        """The index and value of the key to use now (None when the provider has no key)."""
        if not self._keys:
            return -1, None
        now = time.monotonic()
        n = len(self._keys)
        for step in range(n):
            i = (self._next + step) % n
            if self._rest_until[i] <= now:
                self._next = (i + 1) % n
                return i, self._keys[i]
        i = min(range(n), key=self._rest_until.__getitem__)
        return i, self._keys[i]

    def rest(self, index: int, seconds: float | None = None) -> None:
        """Put key `index` aside for `seconds` (default: the pool's rest period)."""
        if 0 <= index < len(self._keys):
            self._rest_until[index] = time.monotonic() + (seconds or self._rest_s)

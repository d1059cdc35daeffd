"""What each target has shown lately, learned online: time to first token and per output token
(EWMA), recent first-token times for a p95, and the prompt-cache hit rate (EWMA)."""

from __future__ import annotations

from collections import deque

_ALPHA = 0.2
_RECENT = 200


class TargetStats:
    __slots__ = ("cache_hit", "per_token_s", "recent_ttft", "samples", "ttft_s")

    def __init__(self) -> None:
        self.ttft_s: float | None = None
        self.per_token_s: float | None = None
        self.cache_hit: float | None = None
        self.samples = 0
        self.recent_ttft: deque[float] = deque(maxlen=_RECENT)

    def observe(
        self, ttft_s: float | None, total_s: float, output_tokens: int, prompt: int, cached: int
    ) -> None:
        self.samples += 1
        first = ttft_s if ttft_s is not None else total_s
        self.ttft_s = _ewma(self.ttft_s, first)
        self.recent_ttft.append(first)
        if output_tokens > 1 and total_s > first:
            self.per_token_s = _ewma(self.per_token_s, (total_s - first) / (output_tokens - 1))
        if prompt > 0:
            self.cache_hit = _ewma(self.cache_hit, min(cached, prompt) / prompt)

    def predicted_s(self, output_tokens: int) -> float | None:
        """Expected time to answer `output_tokens` tokens; None before any sample."""
        if self.ttft_s is None:
            return None
        return self.ttft_s + (self.per_token_s or 0.0) * max(output_tokens - 1, 0)

    def ttft_p95(self) -> float | None:
        """The 95th percentile (nearest rank) of recent times to first token; None before 20
        samples."""
        return self.ttft_percentile(95)

    def ttft_percentile(self, pct: int) -> float | None:
        """The `pct`th percentile (nearest rank, 1-100) of recent times to first token; None
        before 20 samples."""
        n = len(self.recent_ttft)
        if n < 20:
            return None
        # Nearest rank: the ceil(pct/100 n)-th smallest, in integers to dodge float rounding.
        return sorted(self.recent_ttft)[max(1, (pct * n + 99) // 100) - 1]


def _ewma(old: float | None, new: float) -> float:
    return new if old is None else old + _ALPHA * (new - old)


class Stats:
    """TargetStats by target label."""

    def __init__(self) -> None:
        self._by: dict[str, TargetStats] = {}

    def get(self, label: str) -> TargetStats:
        st = self._by.get(label)
        if st is None:
            st = self._by[label] = TargetStats()
        return st

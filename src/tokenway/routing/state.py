"""Shared routing state of one gateway process: breakers, headroom, retry budget and learned
target statistics, and how an attempt's outcome feeds them."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from tokenway.config.schema import HedgeConfig, RoutingConfig
from tokenway.errors import (
    NoCapacity,
    TargetUnsuitable,
    UpstreamConnectError,
    UpstreamError,
    UpstreamStatus,
    UpstreamTimeout,
)
from tokenway.execution.retry import RetryBudget
from tokenway.routing.headroom import Headroom
from tokenway.routing.health import Breakers
from tokenway.routing.stats import Stats

if TYPE_CHECKING:
    from tokenway.execution.failover import Target
    from tokenway.routing.router import Route
    from tokenway.telemetry.metrics import Metrics


class RoutingState:
    def __init__(self, cfg: RoutingConfig, metrics: Metrics | None = None) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self.breakers = Breakers(cfg.breaker, on_eject=self._ejected)
        self.headroom = Headroom()
        r = cfg.retry
        self.budget = RetryBudget(r.ratio, r.floor, r.window_s)
        self.hedges = RetryBudget(cfg.hedge_ratio, 0, r.window_s)
        self.stats = Stats()
        self.backoff_s = r.backoff_ms / 1000.0
        # Told of every ejection decided here (shared state publishes it to other replicas).
        self.on_eject: Callable[[str, float, int], None] | None = None
        # The longest a request waits for a rate-limited target when no other can take it.
        self.max_wait_s = 2.0

    def _ejected(self, label: str, interval: float) -> None:
        if self.metrics is not None:
            self.metrics.ejections.labels(label).inc()
        if self.on_eject is not None:
            self.on_eject(label, interval, self.breakers.ejections(label))

    def unavailable_s(self, t: Target, tokens: int) -> float:
        """Seconds until `t` has headroom for `tokens`; 0 if it has now."""
        return self.headroom.wait_s(t.label, t.upstream.name, tokens)

    def why_skipped(self, t: Target, wait: float) -> NoCapacity:
        if self.breakers.ejected_for(t.label) > 0:
            return NoCapacity(f"{t.label} is ejected after failures", retry_after_s=wait)
        return NoCapacity(f"{t.label} has no rate-limit headroom", flag="URL", retry_after_s=wait)

    def failed(self, t: Target, err: UpstreamError) -> None:
        """Feed an attempt's failure to the breaker and headroom state."""
        kind = _kind(err)
        if self.metrics is not None:
            self.metrics.failures.labels(t.upstream.name, kind).inc()
        if isinstance(err, UpstreamStatus) and err.upstream_status == 429:
            self.headroom.block(t.label, err.retry_after_s)
            self.breakers.release(t.label)
        elif kind in ("connect", "timeout", "5xx"):
            self.breakers.failure(t.label)
        else:
            # The target answered (a 4xx) or was never sent to: it is not unhealthy.
            self.breakers.release(t.label)

    def report(self, routes: Mapping[str, Mapping[str | None, Route]]) -> list[dict[str, Any]]:
        """What the router knows of each target: health, headroom and learned figures."""
        seen: dict[str, dict[str, Any]] = {}
        for model, by_task in routes.items():
            for task, route in by_task.items():
                for t in route.targets:
                    doc = seen.get(t.label)
                    if doc is None:
                        st = self.stats.get(t.label)
                        ttft, p95 = st.ttft_s, st.ttft_p95()
                        doc = seen[t.label] = {
                            "target": t.label,
                            "provider": t.upstream.name,
                            "region": t.upstream.region,
                            "ejected_for_s": round(self.breakers.ejected_for(t.label), 3),
                            "headroom_wait_s": round(self.unavailable_s(t, 0), 3),
                            "samples": st.samples,
                            "ttft_ms": None if ttft is None else round(ttft * 1000, 2),
                            "ttft_p95_ms": None if p95 is None else round(p95 * 1000, 2),
                            "cache_hit_rate": st.cache_hit,
                            "routes": [],
                        }
                    doc["routes"].append({"model": model, "task": task, "policy": route.policy})
        return list(seen.values())

    def hedged(self, first: Target, alt: Target) -> None:
        if self.metrics is not None:
            self.metrics.hedges.labels(first.label).inc()

    def hedge_after_s(self, hedge: HedgeConfig | None, first: Target) -> float | None:
        """How long a first attempt at `first` may take before it is hedged, or None."""
        if hedge is None:
            return None
        if hedge.after_ms is not None:
            return hedge.after_ms / 1000.0
        learned = self.stats.get(first.label).ttft_percentile(hedge.percentile)
        return learned if learned is not None else hedge.default_ms / 1000.0

    def succeeded(self, t: Target, seconds: float) -> None:
        self.breakers.success(t.label)


def _kind(err: UpstreamError) -> str:
    """Connect errors, timeouts, 5xx, 429 and the rest, told apart for metrics."""
    if isinstance(err, UpstreamTimeout):
        return "timeout"
    if isinstance(err, UpstreamConnectError):
        return "connect"
    if isinstance(err, TargetUnsuitable):
        return "unsuitable"
    if isinstance(err, UpstreamStatus):
        if err.upstream_status == 429:
            return "429"
        return "5xx" if err.upstream_status >= 500 else "4xx"
    return "other"

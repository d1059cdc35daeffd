"""Prometheus metrics for the gateway, in their own registry (one per gateway instance)."""

from __future__ import annotations

import os
from decimal import Decimal
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from tokenway.domain.types import Usage

_LAT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    """Requests, tokens by kind, cost, time to first token and latency."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ("api", "model", "provider", "status")
        self.requests = Counter(
            "tokenway_requests", "Client requests by outcome", labels, registry=self.registry
        )
        self.attempts = Counter(
            "tokenway_upstream_attempts",
            "Upstream attempts by provider and outcome flag",
            ("provider", "flag"),
            registry=self.registry,
        )
        self.tokens = Counter(
            "tokenway_tokens",
            "Tokens by kind (input, cache_read, cache_write, output, reasoning)",
            ("model", "provider", "kind"),
            registry=self.registry,
        )
        self.cost = Counter(
            "tokenway_cost_usd",
            "Upstream cost in USD",
            ("model", "provider"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "tokenway_request_latency_seconds",
            "Time from request to last byte",
            ("model", "provider", "status"),
            buckets=_LAT_BUCKETS,
            registry=self.registry,
        )
        self.ttft = Histogram(
            "tokenway_time_to_first_token_seconds",
            "Time from request to the first streamed content",
            ("model", "provider"),
            buckets=_LAT_BUCKETS,
            registry=self.registry,
        )
        self._cache: dict[tuple[str, str, str, int], tuple[Any, ...]] = {}
        self.rejected = Counter(
            "tokenway_rejected_requests",
            "Requests refused before routing (bad input, auth, limits)",
            ("api", "status"),
            registry=self.registry,
        )
        self.ejections = Counter(
            "tokenway_target_ejections",
            "Targets ejected by their circuit breaker",
            ("target",),
            registry=self.registry,
        )
        self.hedges = Counter(
            "tokenway_hedges",
            "Slow first attempts raced by a hedge to the next target",
            ("target",),
            registry=self.registry,
        )
        self.failures = Counter(
            "tokenway_upstream_failures",
            "Failed upstream attempts by kind: connect, timeout, 5xx, 429, 4xx, unsuitable",
            ("provider", "kind"),
            registry=self.registry,
        )
        self.budget_warnings = Counter(
            "tokenway_budget_warnings",
            "Soft budgets passed (once per account and period), by scope: key, team, end_user",
            ("scope",),
            registry=self.registry,
        )

    def _children(self, api: str, model: str, provider: str, status: int) -> tuple[Any, ...]:
        # prometheus_client's labels() takes a lock and validates on every call; the label sets
        # of a gateway are few, so their children are looked up once and kept.
        key = (api, model, provider, status)
        found = self._cache.get(key)
        if found is None:
            st = str(status)
            found = (
                self.requests.labels(api, model, provider, st),
                self.latency.labels(model, provider, st),
                self.ttft.labels(model, provider),
                {
                    kind: self.tokens.labels(model, provider, kind)
                    for kind in ("input", "cache_read", "cache_write", "output", "reasoning")
                },
                self.cost.labels(model, provider),
            )
            self._cache[key] = found
        return found

    def observe(
        self,
        *,
        api: str,
        model: str,
        provider: str,
        status: int,
        usage: Usage | None,
        cost: Decimal,
        latency_s: float,
        ttft_s: float | None,
    ) -> None:
        requests, latency, ttft, tokens, cost_child = self._children(api, model, provider, status)
        requests.inc()
        latency.observe(latency_s)
        if ttft_s is not None:
            ttft.observe(ttft_s)
        if usage is not None:
            for kind, n in (
                ("input", usage.input_tokens),
                ("cache_read", usage.cache_read_tokens),
                ("cache_write", usage.cache_write_tokens),
                ("output", usage.output_tokens),
                ("reasoning", usage.reasoning_tokens),
            ):
                if n:
                    tokens[kind].inc(n)
        if cost:
            cost_child.inc(float(cost))

    def render(self) -> bytes:
        """Prometheus text; under `--workers N`, every worker's figures together."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)

"""Prometheus metrics for the gateway, in their own registry (one per gateway instance)."""

from __future__ import annotations

from decimal import Decimal

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
        self.rejected = Counter(
            "tokenway_rejected_requests",
            "Requests refused before routing (bad input, auth, limits)",
            ("api", "status"),
            registry=self.registry,
        )

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
        st = str(status)
        self.requests.labels(api, model, provider, st).inc()
        self.latency.labels(model, provider, st).observe(latency_s)
        if ttft_s is not None:
            self.ttft.labels(model, provider).observe(ttft_s)
        if usage is not None:
            for kind, n in (
                ("input", usage.input_tokens),
                ("cache_read", usage.cache_read_tokens),
                ("cache_write", usage.cache_write_tokens),
                ("output", usage.output_tokens),
                ("reasoning", usage.reasoning_tokens),
            ):
                if n:
                    self.tokens.labels(model, provider, kind).inc(n)
        if cost:
            self.cost.labels(model, provider).inc(float(cost))

    def render(self) -> bytes:
        return generate_latest(self.registry)

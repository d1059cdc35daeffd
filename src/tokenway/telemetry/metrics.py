"""Prometheus metrics for the gateway, in their own registry (one per gateway instance).

Under `tokenway serve --workers N` every worker writes its figures to a shared directory
(prometheus_client's multiprocess mode, see `tokenway.workers`) and `render` sums them; a
gauge there says how it is combined (`multiprocess_mode`), so each gauge here picks one.
"""

from __future__ import annotations

import os
from decimal import Decimal
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from tokenway.domain.types import Usage

_LAT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
LINE_OUTCOMES = ("ok", "error", "refused", "lost")
"""How a batch line (or an async task's line) left a replica's hands, for `batch_lines`."""
HOOK_OUTCOMES = ("delivered", "failed", "given_up")
"""How one webhook delivery attempt went, for `webhook_deliveries`."""
YIELD_REASONS = ("lag", "capacity")
"""Why the batch runner held back, for `batch_yields`."""


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
        self._background()

    def _background(self) -> None:
        """The metrics of work that can wait: batch lines, batches and tasks, webhooks."""
        self.batch_lines = Counter(
            "tokenway_batch_lines",
            "Batch and async task lines by endpoint, mode and outcome: ok, error, refused "
            "(refused for now and requeued), lost (sent, then its batch ended unfinished)",
            ("endpoint", "mode", "outcome"),
            registry=self.registry,
        )
        # livesum: one figure for the whole server under --workers N, and a worker that dies
        # mid-line takes its lines out of the sum (the supervisor marks it dead).
        self.batch_lines_in_flight = Gauge(
            "tokenway_batch_lines_in_flight",
            "Batch and async task lines running now",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.batches_ended = Counter(
            "tokenway_batches_ended",
            "Batches and async tasks ended, by kind (batch, async) and final status",
            ("kind", "status"),
            registry=self.registry,
        )
        hooks = Counter(
            "tokenway_webhook_deliveries",
            "Webhook delivery attempts by outcome: delivered, failed (to be retried), "
            "given_up (the last attempt failed)",
            ("outcome",),
            registry=self.registry,
        )
        self.webhook_deliveries = {o: hooks.labels(o) for o in HOOK_OUTCOMES}
        yields = Counter(
            "tokenway_batch_yields",
            "Times the batch runner held back for interactive traffic: lag (narrowed to one "
            "line, the event loop ran late), capacity (skipped a model whose capacity queue "
            "had requests waiting)",
            ("reason",),
            registry=self.registry,
        )
        self.batch_yields = {r: yields.labels(r) for r in YIELD_REASONS}

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

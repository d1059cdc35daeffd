"""Per-request bookkeeping: attempts as they happen, and the ledger row and metrics at the end.

Cost is the sum over attempts (what providers bill); revenue is charged only for what the
client received (until price plans arrive, revenue equals the cost of the served attempt).

`mode` (`realtime`, `batch`, `async`) prices every attempt and goes on the row; `sink` is where
the finished row goes (the ledger, unless the caller keeps rows itself, as batch lines do).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal

from tokenway.accounting.ledger import AttemptRow, RequestRow
from tokenway.domain.types import Principal, Usage
from tokenway.errors import UpstreamError
from tokenway.runtime import Runtime
from tokenway.telemetry.log import log, redact

ZERO = Decimal(0)


class RequestContext:
    """What one client request did, collected as it goes."""

    __slots__ = (
        "api",
        "at",
        "attempts",
        "cost",
        "mode",
        "model",
        "principal",
        "provider",
        "provider_model",
        "request_id",
        "rt",
        "served_cost",
        "sink",
        "started",
        "stream",
        "t0",
        "tags",
        "task",
        "ttft_s",
        "usage",
        "user",
    )

    def __init__(
        self, rt: Runtime, request_id: str, api: str, principal: Principal, model: str
    ) -> None:
        self.rt = rt
        self.request_id = request_id
        self.api = api
        self.principal = principal
        self.model = model
        self.started = rt.now()
        # Prices in force when the request arrived bill all of its attempts.
        self.at = datetime.fromtimestamp(self.started, UTC)
        self.t0 = time.perf_counter()
        self.attempts: list[AttemptRow] = []
        self.cost = ZERO
        self.served_cost = ZERO
        self.provider: str | None = None
        self.provider_model: str | None = None
        self.usage: Usage | None = None
        self.ttft_s: float | None = None
        self.stream = False
        self.user: str | None = None
        self.tags: dict[str, str] | None = None
        self.task: str | None = None
        self.mode = "realtime"
        self.sink: Callable[[RequestRow], None] | None = None  # None: the ledger

    def backdate(self, started: float) -> None:
        """Date the request (its row, its prices) from epoch second `started`: a request re-run
        after a crash keeps its first start, so its row is the same row."""
        self.started = started
        self.at = datetime.fromtimestamp(started, UTC)

    def attempt_ok(
        self, provider: str, model: str, usage: Usage, started: float, ttft_s: float | None
    ) -> Decimal:
        """Record a served attempt; returns its cost."""
        cost = self.rt.prices.cost(provider, model, usage, self.at, mode=self.mode, batch_api=False)
        self._add(provider, model, 200, "OK", usage, cost, started, ttft_s, None)
        self.rt.routing.stats.get(f"{provider}/{model}").observe(
            ttft_s,
            time.perf_counter() - started,
            usage.output_tokens,
            usage.input_tokens,
            usage.cache_read_tokens,
        )
        self.provider, self.provider_model, self.usage = provider, model, usage
        self.served_cost = cost
        return cost

    def attempt_batched(self, provider: str, model: str, usage: Usage) -> Decimal:
        """Record an attempt the provider's own Batch API served, at its batch price; returns
        its cost. Its latency says nothing of the target's, so routing learns nothing here."""
        cost = self.rt.prices.cost(provider, model, usage, self.at, mode=self.mode, batch_api=True)
        self._add(provider, model, 200, "OK", usage, cost, self.t0, None, None)
        self.provider, self.provider_model, self.usage = provider, model, usage
        self.served_cost = cost
        return cost

    def attempt_failed(
        self, provider: str, model: str, err: UpstreamError, started: float, usage: Usage | None
    ) -> None:
        """Record a failed attempt (billed if the provider reported usage)."""
        u = usage or Usage()
        cost = (
            self.rt.prices.cost(provider, model, u, self.at, mode=self.mode, batch_api=False)
            if usage is not None
            else ZERO
        )
        status = getattr(err, "upstream_status", 0)
        self._add(provider, model, status, err.flag, u, cost, started, None, redact(err.message))
        self.rt.metrics.attempts.labels(provider, err.flag).inc()
        log.warning(
            "upstream attempt failed",
            extra={
                "fields": {
                    "request_id": self.request_id,
                    "provider": provider,
                    "flag": err.flag,
                    "upstream_status": status,
                }
            },
        )

    def attempt_cancelled(
        self, provider: str, model: str, started: float, usage: Usage | None, prompt: int
    ) -> None:
        """Record an attempt given up while in flight (the loser of a hedge race). The provider
        bills what it processed: its reported usage if any arrived, else the prompt."""
        u = usage or Usage(input_tokens=prompt, source="estimated")
        cost = self.rt.prices.cost(provider, model, u, self.at, mode=self.mode, batch_api=False)
        self._add(provider, model, 0, "HEDGE", u, cost, started, None, None)
        self.rt.metrics.attempts.labels(provider, "HEDGE").inc()

    def attempt_lost(self, provider: str, model: str, prompt: int, at: float) -> None:
        """Record an attempt sent by a process that died before it recorded anything (flag
        LOST): the provider billed at least the prompt, estimated as `prompt` tokens; `at` is
        when it was sent (epoch seconds)."""
        u = Usage(input_tokens=prompt, source="estimated")
        cost = self.rt.prices.cost(provider, model, u, self.at, mode=self.mode, batch_api=False)
        self.cost += cost
        self.attempts.append(
            AttemptRow(
                request_id=self.request_id,
                seq=len(self.attempts),
                ts=at,
                provider=provider,
                provider_model=model,
                status=0,
                flag="LOST",
                usage=u,
                cost_usd=cost,
                latency_ms=0.0,
                error="the process running this attempt stopped before it ended",
            )
        )

    def _add(
        self,
        provider: str,
        model: str,
        status: int,
        flag: str,
        usage: Usage,
        cost: Decimal,
        started: float,
        ttft_s: float | None,
        error: str | None,
    ) -> None:
        self.cost += cost
        self.attempts.append(
            AttemptRow(
                request_id=self.request_id,
                seq=len(self.attempts),
                ts=self.started + (started - self.t0),
                provider=provider,
                provider_model=model,
                status=status,
                flag=flag,
                usage=usage,
                cost_usd=cost,
                latency_ms=(time.perf_counter() - started) * 1000.0,
                ttft_ms=None if ttft_s is None else ttft_s * 1000.0,
                error=error,
            )
        )

    def finish(self, status: int, flag: str) -> None:
        """Write the request row (off the hot path) and metrics."""
        latency = time.perf_counter() - self.t0
        usage = self.usage or Usage()
        served = status < 400 or flag in ("UC", "DC")
        revenue = ZERO
        if served and self.provider and self.provider_model and self.usage is not None:
            revenue = self.rt.plans.revenue(
                self.principal.plan,
                self.model,
                self.provider,
                self.provider_model,
                self.usage,
                self.served_cost,
            )
        provider = self.provider or (self.attempts[-1].provider if self.attempts else None)
        row = RequestRow(
            request_id=self.request_id,
            ts=self.started,
            key=self.principal.name,
            team=self.principal.team,
            model=self.model,
            provider=provider,
            provider_model=self.provider_model
            or (self.attempts[-1].provider_model if self.attempts else None),
            api=self.api,
            mode=self.mode,
            stream=self.stream,
            status=status,
            flag=flag,
            usage=usage,
            cost_usd=self.cost,
            revenue_usd=revenue,
            ttft_ms=None if self.ttft_s is None else self.ttft_s * 1000.0,
            latency_ms=latency * 1000.0,
            attempts=self.attempts,
            end_user=self.user,
            tags=self.tags,
            task=self.task,
        )
        if self.sink is None:
            self.rt.ledger.record(row)
        else:
            self.sink(row)
        self.rt.metrics.observe(
            api=self.api,
            model=self.model,
            provider=provider or "",
            status=status,
            usage=self.usage,
            cost=self.cost,
            latency_s=latency,
            ttft_s=self.ttft_s,
        )
        if not log.isEnabledFor(logging.INFO):
            return
        log.info(
            "request",
            extra={
                "fields": {
                    "request_id": self.request_id,
                    "key": self.principal.name,
                    "api": self.api,
                    "model": self.model,
                    "provider": provider,
                    "status": status,
                    "flag": flag,
                    "attempts": len(self.attempts),
                    "latency_ms": round(latency * 1000.0, 3),
                }
            },
        )

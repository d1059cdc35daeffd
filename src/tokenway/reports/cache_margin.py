"""How the prompt-cache hit rate moves gross margin: per model, the ledger's own traffic
re-costed at hit rates from 0% to 100% with the configured prices, today's point marked.

Re-costing keeps every row's prompt, output and cache writes, and moves the share `h` of each
row's uncached-able prompt (prompt minus cache writes) to cached reads; revenue stays as billed.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import msgspec

from tokenway.accounting.prices import PriceBook
from tokenway.domain.types import Usage

RATES = tuple(i / 10 for i in range(11))


class CurvePoint(msgspec.Struct, kw_only=True):
    hit_rate: float
    cost_usd: Decimal
    margin_usd: Decimal


class MarginCurve(msgspec.Struct, kw_only=True):
    model: str
    requests: int
    revenue_usd: Decimal
    actual_hit_rate: float | None
    actual_cost_usd: Decimal
    points: list[CurvePoint]


def margin_curves(rows: Iterable[dict[str, Any]], prices: PriceBook) -> list[MarginCurve]:
    """One curve per client-facing model, over the served rows with a known provider."""
    by_model: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row.get("provider") and row.get("provider_model") and int(row["status"]) < 400:
            by_model.setdefault(str(row["model"]), []).append(row)
    curves: list[MarginCurve] = []
    for model, rs in sorted(by_model.items()):
        revenue = sum((r["revenue_usd"] for r in rs), Decimal(0))
        actual = sum((r["cost_usd"] for r in rs), Decimal(0))
        prompt = sum(int(r["input_tokens"]) for r in rs)
        cached = sum(int(r["cache_read_tokens"]) for r in rs)
        points = []
        for h in RATES:
            cost = Decimal(0)
            for r in rs:
                writes = int(r["cache_write_tokens"])
                cacheable = max(0, int(r["input_tokens"]) - writes)
                usage = Usage(
                    input_tokens=int(r["input_tokens"]),
                    cache_read_tokens=round(cacheable * h),
                    cache_write_tokens=writes,
                    cache_write_1h_tokens=int(r.get("cache_write_1h_tokens") or 0),
                    output_tokens=int(r["output_tokens"]),
                    reasoning_tokens=int(r["reasoning_tokens"]),
                    service_tier=r.get("service_tier"),
                )
                at = datetime.fromtimestamp(float(r["ts"]), UTC)
                cost += prices.cost(
                    str(r["provider"]),
                    str(r["provider_model"]),
                    usage,
                    at,
                    mode=str(r.get("mode") or "realtime"),  # as the gateway priced the row
                    batch_api=False,
                )
            points.append(CurvePoint(hit_rate=h, cost_usd=cost, margin_usd=revenue - cost))
        curves.append(
            MarginCurve(
                model=model,
                requests=len(rs),
                revenue_usd=revenue,
                actual_hit_rate=cached / prompt if prompt else None,
                actual_cost_usd=actual,
                points=points,
            )
        )
    return curves


def render_curves(curves: list[MarginCurve]) -> str:
    lines: list[str] = []
    for c in curves:
        hit = f"{c.actual_hit_rate:.1%}" if c.actual_hit_rate is not None else "-"
        lines.append(
            f"{c.model}: {c.requests} requests, revenue {c.revenue_usd:.9f} USD, "
            f"today: hit rate {hit}, cost {c.actual_cost_usd:.9f}, "
            f"margin {c.revenue_usd - c.actual_cost_usd:.9f}"
        )
        for p in c.points:
            pct = f"{p.margin_usd / c.revenue_usd:.1%}" if c.revenue_usd else "-"
            lines.append(
                f"  hit {p.hit_rate:>4.0%}  cost {p.cost_usd:>16.9f}  "
                f"margin {p.margin_usd:>16.9f}  {pct:>7}"
            )
    return "\n".join(lines)

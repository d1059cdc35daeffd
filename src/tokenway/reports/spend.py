"""Spend, revenue and margin by a dimension of the ledger's request rows.

Totals are exact: money is summed as Decimal, and the total line is the sum of the group lines.
The prompt-cache hit rate is token-weighted: cached prompt tokens over all prompt tokens.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any

import msgspec

DIMENSIONS = (
    "key",
    "team",
    "model",
    "provider",
    "provider_model",
    "mode",
    "api",
    "status",
    "end_user",
    "task",
)
TAG_PREFIX = "tag:"  # `--by tag:tenant` groups by the value of the row's `tenant` tag


class Group(msgspec.Struct, kw_only=True):
    """One line of a report."""

    name: str
    requests: int = 0
    errors: int = 0
    input_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: Decimal = Decimal(0)
    revenue_usd: Decimal = Decimal(0)

    @property
    def margin_usd(self) -> Decimal:
        return self.revenue_usd - self.cost_usd

    @property
    def margin_pct(self) -> float | None:
        return float(self.margin_usd / self.revenue_usd * 100) if self.revenue_usd else None

    @property
    def cache_hit_rate(self) -> float | None:
        return self.cache_read_tokens / self.input_tokens if self.input_tokens else None

    def add(self, row: dict[str, Any]) -> None:
        self.requests += 1
        if int(row["status"]) >= 400:
            self.errors += 1
        self.input_tokens += int(row["input_tokens"])
        self.cache_read_tokens += int(row["cache_read_tokens"])
        self.cache_write_tokens += int(row["cache_write_tokens"])
        self.output_tokens += int(row["output_tokens"])
        self.reasoning_tokens += int(row["reasoning_tokens"])
        self.cost_usd += row["cost_usd"]
        self.revenue_usd += row["revenue_usd"]

    def to_dict(self) -> dict[str, Any]:
        doc = msgspec.structs.asdict(self)
        doc["cost_usd"] = f"{self.cost_usd:.9f}"
        doc["revenue_usd"] = f"{self.revenue_usd:.9f}"
        doc["margin_usd"] = f"{self.margin_usd:.9f}"
        doc["margin_pct"] = self.margin_pct
        doc["cache_hit_rate"] = self.cache_hit_rate
        return doc


def spend_report(
    rows: Iterable[dict[str, Any]], by: str, until: datetime | None = None
) -> tuple[list[Group], Group]:
    """Groups by `by` (most costly first) and their total. `by` names one dimension or
    several separated by commas (`task,mode`); a group's name joins its values with ` / `."""
    dims = [d.strip() for d in by.split(",")]
    for d in dims:
        if d not in DIMENSIONS and not (d.startswith(TAG_PREFIX) and len(d) > len(TAG_PREFIX)):
            raise ValueError(
                f"cannot group by {d!r}; choose from {', '.join(DIMENSIONS)} or tag:NAME, "
                "several separated by commas"
            )
    limit = until.timestamp() if until is not None else None
    groups: dict[str, Group] = {}
    total = Group(name="total")
    for row in rows:
        if limit is not None and float(row["ts"]) >= limit:
            continue
        name = " / ".join(_value(row, d) for d in dims)
        g = groups.get(name)
        if g is None:
            g = groups[name] = Group(name=name)
        g.add(row)
        total.add(row)
    ordered = sorted(groups.values(), key=lambda g: (-g.cost_usd, g.name))
    return ordered, total


def _value(row: dict[str, Any], dim: str) -> str:
    if dim.startswith(TAG_PREFIX):
        value = (row.get("tags") or {}).get(dim[len(TAG_PREFIX) :])
    else:
        value = row.get(dim)
    return str(value if value is not None else "-")


def render_table(groups: list[Group], total: Group, by: str) -> str:
    """A plain-text table for the terminal."""
    head = (
        f"{by[:32]:<32} {'requests':>9} {'errors':>7} {'input':>12} {'cached':>12} "
        f"{'hit rate':>8} {'output':>12} {'cost USD':>16} {'revenue USD':>16} {'margin':>8}"
    )
    lines = [head, "-" * len(head)]
    for g in [*groups, total]:
        if g is total:
            lines.append("-" * len(head))
        hit = f"{g.cache_hit_rate:.1%}" if g.cache_hit_rate is not None else "-"
        margin = f"{g.margin_pct:.1f}%" if g.margin_pct is not None else "-"
        lines.append(
            f"{g.name[:32]:<32} {g.requests:>9} {g.errors:>7} {g.input_tokens:>12} "
            f"{g.cache_read_tokens:>12} {hit:>8} {g.output_tokens:>12} "
            f"{g.cost_usd:>16.9f} {g.revenue_usd:>16.9f} {margin:>8}"
        )
    return "\n".join(lines)

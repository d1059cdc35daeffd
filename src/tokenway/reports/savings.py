"""What batch and async work saved against realtime prices, from the ledger.

Per mode (`realtime`, `batch`, `async`), and optionally split further by any dimension the
spend report knows: the spend (what the attempts were costed at), what the same attempts would
have cost at realtime prices, the saving (the difference) and the saving as a share of the
realtime cost.

Each attempt is priced again with the price book as a realtime request, with its own usage, at
its request's start: that is the moment the gateway priced every attempt of the request at, so
effective dates and time-of-day windows match and only the mode differs. Realtime rows are
counted at their own cost (nothing to save by definition), so a price book edited since they
were written cannot invent a saving for them. An attempt whose model the price book does not
know is counted at its recorded cost (no saving claimed) and counted in `unpriced`.

Money is Decimal throughout. Sums are taken without rounding (`_EXACT`), so the group lines add
up to the mode lines, and the mode lines to the total, exactly, in any order.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import MAX_EMAX, MAX_PREC, MIN_EMIN, Context, Decimal
from typing import Any

import msgspec

from tokenway.accounting.prices import PriceBook, usage_cost
from tokenway.domain.types import Usage
from tokenway.reports.spend import DIMENSIONS, TAG_PREFIX

__all__ = [
    "MODES",
    "SavingsGroup",
    "SavingsReport",
    "headline",
    "render_savings",
    "savings_report",
]

MODES = ("realtime", "batch", "async")
"""The modes in report order; any other mode a ledger holds follows, by name."""

_ZERO = Decimal(0)
# The default context keeps 28 significant digits: a long sum of fx-converted costs could round
# and the groups would no longer add up to the total to the last digit. Additions here never do.
_EXACT = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN)


class SavingsGroup(msgspec.Struct, kw_only=True):
    """One line of the savings report: a mode, or a mode split by other dimensions."""

    name: str
    mode: str
    requests: int = 0
    attempts: int = 0
    unpriced: int = 0
    """Attempts the price book has no price for: counted at their recorded cost."""
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: Decimal = _ZERO
    """What the attempts were costed at on the ledger (in their own mode)."""
    realtime_cost_usd: Decimal = _ZERO
    """What the same attempts cost at realtime prices at the same time."""

    @property
    def saving_usd(self) -> Decimal:
        """Realtime cost minus actual cost (negative if the mode cost more than realtime)."""
        return _EXACT.subtract(self.realtime_cost_usd, self.cost_usd)

    @property
    def saving_pct(self) -> float | None:
        """The saving as a percentage of the realtime cost; None when that is zero."""
        if not self.realtime_cost_usd:
            return None
        return float(self.saving_usd / self.realtime_cost_usd * 100)

    def add_request(self, row: dict[str, Any]) -> None:
        """Count a request row (its served usage)."""
        self.requests += 1
        self.input_tokens += int(row["input_tokens"])
        self.output_tokens += int(row["output_tokens"])

    def add_attempt(self, cost: Decimal, realtime: Decimal, priced: bool) -> None:
        """Count one attempt's recorded cost and its realtime counterfactual."""
        self.attempts += 1
        if not priced:
            self.unpriced += 1
        self.cost_usd = _EXACT.add(self.cost_usd, cost)
        self.realtime_cost_usd = _EXACT.add(self.realtime_cost_usd, realtime)

    def merge(self, other: SavingsGroup) -> None:
        """Add another group's figures to this one."""
        self.requests += other.requests
        self.attempts += other.attempts
        self.unpriced += other.unpriced
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cost_usd = _EXACT.add(self.cost_usd, other.cost_usd)
        self.realtime_cost_usd = _EXACT.add(self.realtime_cost_usd, other.realtime_cost_usd)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: money as decimal strings with nine decimals."""
        doc = msgspec.structs.asdict(self)
        doc["cost_usd"] = f"{self.cost_usd:.9f}"
        doc["realtime_cost_usd"] = f"{self.realtime_cost_usd:.9f}"
        doc["saving_usd"] = f"{self.saving_usd:.9f}"
        doc["saving_pct"] = self.saving_pct
        return doc


class SavingsReport(msgspec.Struct, kw_only=True):
    """The whole report. `groups` is empty unless the report was split with `by`."""

    by: str | None
    modes: list[SavingsGroup]
    groups: list[SavingsGroup]
    deferred: SavingsGroup
    """Every mode but realtime together: what batch and async work saved."""
    total: SavingsGroup

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, as `tokenway report --savings --format json` prints it."""
        return {
            "by": self.by,
            "modes": [g.to_dict() for g in self.modes],
            "groups": [g.to_dict() for g in self.groups],
            "deferred": self.deferred.to_dict(),
            "total": self.total.to_dict(),
        }


def _dimensions(by: str | None) -> list[str]:
    """The dimensions to split each mode by (mode itself is always the first)."""
    if by is None:
        return []
    dims = [d.strip() for d in by.split(",")]
    for d in dims:
        if d not in DIMENSIONS and not (d.startswith(TAG_PREFIX) and len(d) > len(TAG_PREFIX)):
            raise ValueError(
                f"cannot split savings by {d!r}; choose from {', '.join(DIMENSIONS)} or "
                "tag:NAME, several separated by commas"
            )
    return [d for d in dims if d != "mode"]


def _value(row: dict[str, Any], dim: str) -> str:
    if dim.startswith(TAG_PREFIX):
        value = (row.get("tags") or {}).get(dim[len(TAG_PREFIX) :])
    else:
        value = row.get(dim)
    return str(value if value is not None else "-")


def _mode_order(mode: str) -> tuple[int, str]:
    return (MODES.index(mode) if mode in MODES else len(MODES), mode)


def _usage(attempt: dict[str, Any]) -> Usage:
    tier = attempt.get("service_tier")
    # Anthropic reports a batch request's tier as "batch", which the price book reads as the
    # batch mode: a realtime counterfactual must not keep it, or it would be discounted too.
    if tier is not None and str(tier).lower() == "batch":
        tier = None
    return Usage(
        input_tokens=int(attempt["input_tokens"]),
        cache_read_tokens=int(attempt["cache_read_tokens"]),
        cache_write_tokens=int(attempt["cache_write_tokens"]),
        cache_write_1h_tokens=int(attempt.get("cache_write_1h_tokens") or 0),
        output_tokens=int(attempt["output_tokens"]),
        reasoning_tokens=int(attempt["reasoning_tokens"]),
        service_tier=tier,
    )


class _Request(msgspec.Struct):
    mode: str
    group: SavingsGroup
    at: datetime


def savings_report(
    requests: Iterable[dict[str, Any]],
    attempts: Iterable[dict[str, Any]],
    prices: PriceBook,
    *,
    by: str | None = None,
    until: datetime | None = None,
) -> SavingsReport:
    """Spend, realtime cost and saving per mode over `requests` (as `read_requests` yields
    them) and their `attempts` (as `read_attempts` does; attempts of other requests are
    ignored), re-priced with `prices`.

    `by` splits each mode further (`model`, `task,key`, `tag:tenant`: the spend report's
    dimensions); `until` drops requests that started at or after it. Raises ValueError for an
    unknown dimension.
    """
    dims = _dimensions(by)
    limit = until.timestamp() if until is not None else None
    modes: dict[str, SavingsGroup] = {}
    groups: dict[tuple[str, str], SavingsGroup] = {}
    kept: dict[str, _Request] = {}
    for row in requests:
        ts = float(row["ts"])
        if limit is not None and ts >= limit:
            continue
        mode = str(row.get("mode") or "realtime")
        name = " / ".join([mode, *(_value(row, d) for d in dims)])
        group = groups.get((mode, name))
        if group is None:
            group = groups[(mode, name)] = SavingsGroup(name=name, mode=mode)
        group.add_request(row)
        kept[str(row["request_id"])] = _Request(mode, group, datetime.fromtimestamp(ts, UTC))
    for attempt in attempts:
        request = kept.get(str(attempt["request_id"]))
        if request is None:
            continue
        cost: Decimal = attempt["cost_usd"]
        realtime, priced = cost, True
        if request.mode != "realtime":
            usage = _usage(attempt)
            price = prices.price(
                str(attempt["provider"]),
                str(attempt["provider_model"]),
                request.at,
                service_tier=usage.service_tier,
                mode="realtime",
            )
            if price is None:
                priced = False
            else:
                realtime = usage_cost(price, usage)
        request.group.add_attempt(cost, realtime, priced)
    for (mode, _), group in groups.items():
        line = modes.get(mode)
        if line is None:
            line = modes[mode] = SavingsGroup(name=mode, mode=mode)
        line.merge(group)
    ordered_modes = sorted(modes.values(), key=lambda g: _mode_order(g.mode))
    deferred = SavingsGroup(name="batch and async", mode="deferred")
    total = SavingsGroup(name="total", mode="total")
    for line in ordered_modes:
        total.merge(line)
        if line.mode != "realtime":
            deferred.merge(line)
    split = (
        sorted(groups.values(), key=lambda g: (_mode_order(g.mode), -g.cost_usd, g.name))
        if dims
        else []
    )
    return SavingsReport(
        by=",".join(dims) or None, modes=ordered_modes, groups=split, deferred=deferred, total=total
    )


def _pct(value: float | None) -> str:
    return f"{value:.1f}%" if value is not None else "-"


def headline(report: SavingsReport) -> str:
    """One sentence: what batch and async work saved against realtime prices."""
    d = report.deferred
    share = (
        f" ({_pct(d.saving_pct)} off their cost at realtime prices)"
        if d.saving_pct is not None
        else ""
    )
    return (
        f"batch and async saved {d.saving_usd:.9f} USD against realtime prices{share}, "
        f"over {d.requests} of {report.total.requests} requests"
    )


def render_savings(report: SavingsReport) -> str:
    """A plain-text table for the terminal: each mode, its split lines under it, the total."""
    label = f"mode / {report.by}" if report.by else "mode"
    head = (
        f"{label[:40]:<40} {'requests':>9} {'attempts':>9} {'input':>12} {'output':>12} "
        f"{'cost USD':>16} {'realtime USD':>16} {'saving USD':>16} {'saving':>8}"
    )

    def line(g: SavingsGroup, indent: str = "") -> str:
        name = f"{indent}{g.name}"
        return (
            f"{name[:40]:<40} {g.requests:>9} {g.attempts:>9} {g.input_tokens:>12} "
            f"{g.output_tokens:>12} {g.cost_usd:>16.9f} {g.realtime_cost_usd:>16.9f} "
            f"{g.saving_usd:>16.9f} {_pct(g.saving_pct):>8}"
        )

    lines = [head, "-" * len(head)]
    for mode in report.modes:
        lines.append(line(mode))
        lines.extend(line(g, "  ") for g in report.groups if g.mode == mode.mode)
    lines.append("-" * len(head))
    lines.append(line(report.total))
    lines.append("")
    lines.append(headline(report))
    if report.total.unpriced:
        lines.append(
            f"{report.total.unpriced} attempts have no price in the price book: counted at "
            "their recorded cost, no saving claimed"
        )
    return "\n".join(lines)

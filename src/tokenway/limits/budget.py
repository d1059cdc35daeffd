"""Per-key spend budgets for one gateway process. Admission is a borrow: a request reserves its
worst-case cost, and settlement replaces the reservation with what the providers billed."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from tokenway.config.schema import KeyConfig
from tokenway.errors import BudgetExceeded

ZERO = Decimal(0)


def period_start(period: str, now: datetime) -> datetime | None:
    """The UTC start of the period containing `now`; None for a lifetime (`total`) budget."""
    if period == "day":
        return now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "month":
        return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return None


class Hold:
    """A reservation against one key's budget in one period."""

    __slots__ = ("amount", "key", "period")

    def __init__(self, key: str, period: datetime | None, amount: Decimal) -> None:
        self.key, self.period, self.amount = key, period, amount


class _Account:
    __slots__ = ("budget", "hard", "period", "period_kind", "reserved", "spent", "warned")

    def __init__(self, cfg: KeyConfig, budget: Decimal) -> None:
        self.budget, self.hard, self.period_kind = budget, cfg.budget_hard, cfg.budget_period
        self.period: datetime | None = None
        self.spent = ZERO
        self.reserved = ZERO
        self.warned = False


class BudgetBook:
    """Spent and reserved money per budgeted key; keys without a budget are not tracked."""

    def __init__(
        self,
        keys: Iterable[KeyConfig],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        warn: Callable[[str, str], None] | None = None,
    ) -> None:
        self._clock, self._warn = clock, warn
        self._acc = {
            k.name: _Account(k, Decimal(str(k.budget_usd)))
            for k in keys
            if k.budget_usd is not None
        }

    def has_any(self) -> bool:
        """Whether any key has a budget (else the ledger need not be read at start)."""
        return bool(self._acc)

    def has_budget(self, key: str) -> bool:
        """Whether admission for `key` needs a worst-case cost at all."""
        return key in self._acc

    def _roll(self, acc: _Account) -> datetime | None:
        start = period_start(acc.period_kind, self._clock())
        if start != acc.period:
            acc.period, acc.spent, acc.warned = start, ZERO, False
            # Reservations of the old period settle into it, so they stop counting here.
            acc.reserved = ZERO
        return start

    def seed(self, rows: Iterable[dict[str, Any]]) -> None:
        """Add ledger rows (`key`, `ts`, `cost_usd`) of the current period to the spend."""
        for acc in self._acc.values():
            self._roll(acc)
        for row in rows:
            acc_ = self._acc.get(row.get("key") or "")
            cost = row.get("cost_usd")
            if acc_ is None or cost is None:
                continue
            ts = row.get("ts")
            if acc_.period is not None and isinstance(ts, datetime):
                ts = ts if ts.tzinfo else ts.replace(tzinfo=UTC)
                if ts < acc_.period:
                    continue
            acc_.spent += Decimal(cost)

    def earliest_period(self) -> datetime | None:
        """The earliest period start among budgeted keys (what to read the ledger from)."""
        starts = [period_start(a.period_kind, self._clock()) for a in self._acc.values()]
        if not starts or any(s is None for s in starts):
            return None
        return min(s for s in starts if s is not None)

    def admit(self, key: str, worst_case: Decimal) -> Hold | None:
        """Reserve `worst_case` or raise `BudgetExceeded` (hard budgets). None: no budget."""
        acc = self._acc.get(key)
        if acc is None:
            return None
        period = self._roll(acc)
        if acc.spent + acc.reserved + worst_case > acc.budget:
            what = f"Key '{key}' has reached its {acc.period_kind} budget of ${acc.budget}."
            if acc.hard:
                raise BudgetExceeded(what)
            if not acc.warned and self._warn is not None:
                acc.warned = True
                self._warn(key, what)
        acc.reserved += worst_case
        return Hold(key, period, worst_case)

    def settle(self, hold: Hold | None, actual: Decimal) -> None:
        """Replace a reservation with the actual cost (exactly, in Decimal)."""
        if hold is None:
            return
        acc = self._acc[hold.key]
        current = self._roll(acc)
        if hold.period != current:
            return
        acc.reserved -= hold.amount
        acc.spent += actual

    def state(self, key: str) -> tuple[Decimal, Decimal]:
        """(spent, reserved) for `key` in its current period."""
        acc = self._acc[key]
        self._roll(acc)
        return acc.spent, acc.reserved

"""Spend budgets for one gateway process: per key, per team, and per end user of a key or team.

Admission is a borrow: a request reserves its worst-case cost on every account that covers it
(its key, its team, its end user under each), all or none; settlement replaces each reservation
with what the providers billed. Concurrent requests can therefore overspend an account by at
most the worst case of the requests already admitted when the limit is reached.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import msgspec

from tokenway.config.schema import KeyConfig, TeamConfig
from tokenway.errors import BudgetExceeded

ZERO = Decimal(0)


def row_moment(ts: Any) -> datetime | None:
    """A ledger row's `ts` (aware or naive UTC datetime, or epoch seconds) as an aware datetime."""
    if isinstance(ts, datetime):
        return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)
    if isinstance(ts, int | float):
        return datetime.fromtimestamp(ts, UTC)
    return None


def period_start(period: str, now: datetime) -> datetime | None:
    """The UTC start of the period containing `now`; None for a lifetime (`total`) budget."""
    if period == "day":
        return now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "month":
        return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return None


class Limit(msgspec.Struct, frozen=True):
    """A budget: how much, over which period, and whether passing it refuses requests."""

    usd: Decimal
    period: str
    hard: bool


def refusal(label: str, limit: Limit, worst_case: Decimal) -> str:
    """Why a hard budget refuses a request that would cost up to `worst_case`."""
    if worst_case > limit.usd:
        # no amount of waiting admits it: say what to change
        return (
            f"This request could cost up to ${worst_case:.6f} (its prompt and max_tokens at "
            f"the dearest target), more than {label}'s whole {limit.period} budget of "
            f"${limit.usd}; lower max_tokens."
        )
    return f"{label} has reached its {limit.period} budget of ${limit.usd}."


class Payer(msgspec.Struct, frozen=True):
    """Who a request is charged to; the budget accounts that cover it derive from this."""

    key: str
    team: str | None = None
    end_user: str | None = None


class Hold:
    """A reservation against one account in one period."""

    __slots__ = ("account", "amount", "period")

    def __init__(self, account: str, period: datetime | None, amount: Decimal) -> None:
        self.account, self.period, self.amount = account, period, amount


class _Account:
    __slots__ = ("label", "limit", "period", "reserved", "spent", "warned")

    def __init__(self, label: str, limit: Limit) -> None:
        self.label, self.limit = label, limit
        self.period: datetime | None = None
        self.spent = ZERO
        self.reserved = ZERO
        self.warned = False


def _limit(usd: float | None, period: str, hard: bool) -> Limit | None:
    return None if usd is None else Limit(Decimal(str(usd)), period, hard)


class BudgetBook:
    """Spent and reserved money per budgeted account; requests no budget covers cost nothing
    to admit. `warn(account, message)` is called once per period when a soft budget is passed.
    """

    def __init__(
        self,
        keys: Iterable[KeyConfig],
        teams: Iterable[TeamConfig] = (),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        warn: Callable[[str, str], None] | None = None,
    ) -> None:
        self._clock, self._warn = clock, warn
        self._acc: dict[str, _Account] = {}
        # Per-end-user limits by owner account id ("key:app", "team:search"); the accounts
        # themselves appear as end users do.
        self._per_user: dict[str, Limit] = {}
        self._teams_of: dict[str, str | None] = {}
        for k in keys:
            self._teams_of[k.name] = k.team
            self._declare(f"key:{k.name}", f"Key '{k.name}'", k.budget_usd, k.budget_period, k)
            limit = _limit(k.end_user_budget_usd, k.end_user_budget_period, k.budget_hard)
            if limit is not None:
                self._per_user[f"key:{k.name}"] = limit
        for t in teams:
            self._declare(f"team:{t.name}", f"Team '{t.name}'", t.budget_usd, t.budget_period, t)
            limit = _limit(t.end_user_budget_usd, t.end_user_budget_period, t.budget_hard)
            if limit is not None:
                self._per_user[f"team:{t.name}"] = limit

    def set_key(self, k: KeyConfig) -> None:
        """Declare or update the budgets of a key managed at runtime (spend is kept)."""
        self._teams_of[k.name] = k.team
        account = f"key:{k.name}"
        limit = _limit(k.budget_usd, k.budget_period, k.budget_hard)
        if limit is None:
            self._acc.pop(account, None)
        elif account in self._acc:
            self._acc[account].limit = limit
        else:
            self._acc[account] = _Account(f"Key '{k.name}'", limit)
        per_user = _limit(k.end_user_budget_usd, k.end_user_budget_period, k.budget_hard)
        if per_user is None:
            self._per_user.pop(account, None)
        else:
            self._per_user[account] = per_user

    def _declare(self, account: str, label: str, usd: float | None, period: str, cfg: Any) -> None:
        limit = _limit(usd, period, cfg.budget_hard)
        if limit is not None:
            self._acc[account] = _Account(label, limit)

    def has_any(self) -> bool:
        """Whether any budget exists (else the ledger need not be read at start)."""
        return bool(self._acc or self._per_user)

    def covers(self, payer: Payer) -> bool:
        """Whether admission for `payer` needs a worst-case cost at all."""
        team = payer.team
        return (
            f"key:{payer.key}" in self._acc
            or (team is not None and f"team:{team}" in self._acc)
            or (
                payer.end_user is not None
                and (
                    f"key:{payer.key}" in self._per_user
                    or (team is not None and f"team:{team}" in self._per_user)
                )
            )
        )

    def plan(self, payer: Payer) -> list[tuple[str, str, Limit]]:
        """(account id, label, limit) of every budget covering `payer` (for shared state)."""
        return [(a, self._acc[a].label, self._acc[a].limit) for a in self._accounts(payer)]

    def teams_of(self, key: str) -> str | None:
        return self._teams_of.get(key)

    def _accounts(self, payer: Payer) -> list[str]:
        owners = [f"key:{payer.key}"]
        if payer.team is not None:
            owners.append(f"team:{payer.team}")
        found = [o for o in owners if o in self._acc]
        if payer.end_user is not None:
            for owner in owners:
                limit = self._per_user.get(owner)
                if limit is None:
                    continue
                account = f"{owner}/user:{payer.end_user}"
                if account not in self._acc:
                    what = "team" if owner.startswith("team:") else "key"
                    label = f"End user '{payer.end_user}' of {what} '{owner.split(':', 1)[1]}'"
                    self._acc[account] = _Account(label, limit)
                found.append(account)
        return found

    def _roll(self, acc: _Account) -> datetime | None:
        start = period_start(acc.limit.period, self._clock())
        if start != acc.period:
            acc.period, acc.spent, acc.warned = start, ZERO, False
            # Reservations of the old period settle into it, so they stop counting here.
            acc.reserved = ZERO
        return start

    def seed(self, rows: Iterable[dict[str, Any]]) -> None:
        """Add ledger rows (`key`, `team`, `end_user`, `ts`, `cost_usd`) of the current
        period to the spend of every account they count against."""
        for acc in self._acc.values():
            self._roll(acc)
        for row in rows:
            cost, key = row.get("cost_usd"), row.get("key")
            if cost is None or not key:
                continue
            team = row.get("team") or self._teams_of.get(key)
            payer = Payer(key, team, row.get("end_user") or None)
            ts = row_moment(row.get("ts"))
            for account in self._accounts(payer):
                acc = self._acc[account]
                self._roll(acc)
                if acc.period is not None and isinstance(ts, datetime) and ts < acc.period:
                    continue
                acc.spent += Decimal(cost)

    def earliest_period(self) -> datetime | None:
        """The earliest period start among all budgets (what to read the ledger from)."""
        now = self._clock()
        limits = [a.limit for a in self._acc.values()] + list(self._per_user.values())
        starts = [period_start(limit.period, now) for limit in limits]
        if not starts or any(s is None for s in starts):
            return None
        return min(s for s in starts if s is not None)

    def admit(self, payer: Payer, worst_case: Decimal) -> list[Hold]:
        """Reserve `worst_case` on every account covering `payer`, or none of them: raises
        `BudgetExceeded` when a hard budget would be passed."""
        accounts = self._accounts(payer)
        periods: list[datetime | None] = []
        for account in accounts:
            acc = self._acc[account]
            periods.append(self._roll(acc))
            if acc.spent + acc.reserved + worst_case <= acc.limit.usd:
                continue
            if acc.limit.hard:
                raise BudgetExceeded(refusal(acc.label, acc.limit, worst_case))
            if not acc.warned and self._warn is not None:
                acc.warned = True
                self._warn(account, f"{acc.label} has passed its {acc.limit.period} budget.")
        holds = []
        for account, period in zip(accounts, periods, strict=True):
            self._acc[account].reserved += worst_case
            holds.append(Hold(account, period, worst_case))
        return holds

    def settle(self, holds: Iterable[Hold], actual: Decimal) -> None:
        """Replace reservations with the actual cost (exactly, in Decimal)."""
        for hold in holds:
            acc = self._acc[hold.account]
            if hold.period != self._roll(acc):
                continue
            acc.reserved -= hold.amount
            acc.spent += actual

    def state(self, account: str) -> tuple[Decimal, Decimal]:
        """(spent, reserved) of an account (`key:NAME`, `team:NAME`, `key:NAME/user:ID`) in
        its current period."""
        acc = self._acc[account]
        self._roll(acc)
        return acc.spent, acc.reserved

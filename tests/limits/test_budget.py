from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokenway.config.schema import KeyConfig
from tokenway.errors import BudgetExceeded
from tokenway.limits.budget import BudgetBook


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def key(period: str = "total", hard: bool = True, budget: float = 1.0) -> KeyConfig:
    return KeyConfig(
        name="k", key="sk-x", budget_usd=budget, budget_period=period, budget_hard=hard
    )  # type: ignore[arg-type]


def test_hard_budget_refuses_and_names_key_not_secret() -> None:
    book = BudgetBook([key()])
    h = book.admit("k", Decimal("0.6"))
    with pytest.raises(BudgetExceeded) as exc:
        book.admit("k", Decimal("0.6"))
    assert "'k'" in exc.value.message and "sk-x" not in exc.value.message
    book.settle(h, Decimal("0.1"))
    assert book.admit("k", Decimal("0.6")) is not None
    assert book.admit("other", Decimal("99")) is None


def test_day_rollover() -> None:
    clock = Clock(datetime(2026, 1, 31, 23, 59, tzinfo=UTC))
    book = BudgetBook([key("day")], clock=clock)
    book.settle(book.admit("k", Decimal("0.9")), Decimal("0.9"))
    with pytest.raises(BudgetExceeded):
        book.admit("k", Decimal("0.2"))
    clock.now = datetime(2026, 2, 1, 0, 0, tzinfo=UTC)
    assert book.state("k") == (Decimal(0), Decimal(0))
    assert book.admit("k", Decimal("0.2")) is not None


def test_soft_budget_warns_once() -> None:
    seen: list[str] = []
    book = BudgetBook([key(hard=False)], warn=lambda k, m: seen.append(k))
    for _ in range(3):
        book.admit("k", Decimal("0.6"))
    assert seen == ["k"]


def test_seed_counts_current_month_only() -> None:
    clock = Clock(datetime(2026, 3, 15, tzinfo=UTC))
    book = BudgetBook([key("month")], clock=clock)
    book.seed(
        [
            {"key": "k", "ts": datetime(2026, 2, 28, tzinfo=UTC), "cost_usd": Decimal("5")},
            {"key": "k", "ts": datetime(2026, 3, 1, tzinfo=UTC), "cost_usd": Decimal("0.25")},
            {"key": "z", "ts": datetime(2026, 3, 2, tzinfo=UTC), "cost_usd": Decimal("1")},
        ]
    )
    assert book.state("k") == (Decimal("0.25"), Decimal(0))


money = st.decimals(min_value=0, max_value=1, places=6)


@given(st.lists(st.tuples(money, money), max_size=30))
def test_reserve_settle_exact(pairs: list[tuple[Decimal, Decimal]]) -> None:
    book = BudgetBook([key(hard=False, budget=0.5)])
    holds = [(book.admit("k", w), a) for w, a in pairs]
    for h, a in holds:
        assert book.state("k")[1] >= 0
        book.settle(h, a)
    assert book.state("k") == (sum((a for _, a in pairs), Decimal(0)), Decimal(0))

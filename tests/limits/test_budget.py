from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokenway.config.schema import KeyConfig, TeamConfig
from tokenway.errors import BudgetExceeded
from tokenway.limits.budget import BudgetBook, Payer

K = Payer("k")
D = Decimal


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def key(
    period: str = "total", hard: bool = True, budget: float | None = 1.0, **kw: object
) -> KeyConfig:
    return KeyConfig(
        name="k", key="sk-x", budget_usd=budget, budget_period=period, budget_hard=hard, **kw
    )  # type: ignore[arg-type]


def test_hard_budget_refuses_and_names_key_not_secret() -> None:
    book = BudgetBook([key()])
    h = book.admit(K, D("0.6"))
    with pytest.raises(BudgetExceeded) as exc:
        book.admit(K, D("0.6"))
    assert "'k'" in exc.value.message and "sk-x" not in exc.value.message
    book.settle(h, D("0.1"))
    assert book.admit(K, D("0.6"))
    assert book.admit(Payer("other"), D("99")) == []
    assert not book.covers(Payer("other"))


def test_day_rollover() -> None:
    clock = Clock(datetime(2026, 1, 31, 23, 59, tzinfo=UTC))
    book = BudgetBook([key("day")], clock=clock)
    book.settle(book.admit(K, D("0.9")), D("0.9"))
    with pytest.raises(BudgetExceeded):
        book.admit(K, D("0.2"))
    clock.now = datetime(2026, 2, 1, 0, 0, tzinfo=UTC)
    assert book.state("key:k") == (D(0), D(0))
    assert book.admit(K, D("0.2"))


def test_soft_budget_warns_once() -> None:
    seen: list[str] = []
    book = BudgetBook([key(hard=False)], warn=lambda a, m: seen.append(a))
    for _ in range(3):
        book.admit(K, D("0.6"))
    assert seen == ["key:k"]


def test_seed_counts_current_month_only() -> None:
    clock = Clock(datetime(2026, 3, 15, tzinfo=UTC))
    book = BudgetBook([key("month")], clock=clock)
    book.seed(
        [
            {"key": "k", "ts": datetime(2026, 2, 28, tzinfo=UTC), "cost_usd": D("5")},
            {"key": "k", "ts": datetime(2026, 3, 1, tzinfo=UTC), "cost_usd": D("0.25")},
            {"key": "z", "ts": datetime(2026, 3, 2, tzinfo=UTC), "cost_usd": D("1")},
        ]
    )
    assert book.state("key:k") == (D("0.25"), D(0))


def test_team_budget_spans_its_keys_and_refusal_reserves_nothing() -> None:
    keys = [
        KeyConfig(name="a", key="sk-a", team="search", budget_usd=10.0),
        KeyConfig(name="b", key="sk-b", team="search"),
    ]
    book = BudgetBook(keys, [TeamConfig(name="search", budget_usd=1.0)])
    a, b = Payer("a", "search"), Payer("b", "search")
    assert book.covers(b)
    book.settle(book.admit(a, D("0.5")), D("0.5"))
    book.settle(book.admit(b, D("0.4")), D("0.4"))
    with pytest.raises(BudgetExceeded) as exc:
        book.admit(a, D("0.2"))
    assert "Team 'search'" in exc.value.message
    # all or none: the key's own account was not charged by the refused request
    assert book.state("key:a") == (D("0.5"), D(0))
    assert book.state("team:search") == (D("0.9"), D(0))


def test_end_user_budgets_are_per_user_and_per_period() -> None:
    clock = Clock(datetime(2026, 5, 1, 12, tzinfo=UTC))
    book = BudgetBook([key(budget=None, end_user_budget_usd=0.1)], clock=clock)
    alice, bob = Payer("k", None, "alice"), Payer("k", None, "bob")
    assert book.covers(alice) and not book.covers(K)
    book.settle(book.admit(alice, D("0.08")), D("0.08"))
    with pytest.raises(BudgetExceeded) as exc:
        book.admit(alice, D("0.05"))
    assert "End user 'alice' of key 'k'" in exc.value.message
    assert book.admit(bob, D("0.05"))
    clock.now = datetime(2026, 5, 2, 0, 1, tzinfo=UTC)  # default end-user period: a day
    assert book.admit(alice, D("0.05"))


def test_seed_fills_team_and_end_user_accounts() -> None:
    keys = [KeyConfig(name="a", key="sk-a", team="t")]
    teams = [
        TeamConfig(
            name="t", budget_usd=5.0, end_user_budget_usd=1.0, end_user_budget_period="total"
        )
    ]
    book = BudgetBook(keys, teams)
    now = datetime.now(UTC)
    book.seed(
        [
            {"key": "a", "team": "t", "end_user": "u", "ts": now, "cost_usd": D("0.7")},
            {"key": "a", "team": None, "end_user": None, "ts": now, "cost_usd": D("0.1")},
        ]
    )
    assert book.state("team:t") == (D("0.8"), D(0))
    assert book.state("team:t/user:u") == (D("0.7"), D(0))
    with pytest.raises(BudgetExceeded):
        book.admit(Payer("a", "t", "u"), D("0.31"))


money = st.decimals(min_value=0, max_value=1, places=6)


@given(st.lists(st.tuples(money, money), max_size=30))
def test_reserve_settle_exact(pairs: list[tuple[Decimal, Decimal]]) -> None:
    book = BudgetBook(
        [key(hard=False, budget=0.5, team="t", end_user_budget_usd=0.2)],
        [TeamConfig(name="t", budget_usd=0.3, budget_hard=False)],
    )
    payer = Payer("k", "t", "u")
    holds = [(book.admit(payer, w), a) for w, a in pairs]
    for h, a in holds:
        assert book.state("key:k")[1] >= 0
        book.settle(h, a)
    total = sum((a for _, a in pairs), D(0))
    for account in ("key:k", "team:t", "key:k/user:u"):
        if pairs:
            assert book.state(account) == (total, D(0))

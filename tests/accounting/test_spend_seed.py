"""Budgets restart from the ledger's spend: summed per payer and hour by `read_spend`, on both
backends, and counted only in the periods each budget covers."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from tokenway.accounting.ledger import open_ledger, read_requests, read_spend
from tokenway.config.schema import KeyConfig
from tokenway.limits.budget import BudgetBook

from .test_acct_ledger import make_row

D = Decimal
NOW = datetime(2026, 3, 15, 12, 30, tzinfo=UTC)


def stamp(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> float:
    return datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp()


async def test_spend_is_summed_per_payer_hour_and_seeds_day_and_month_budgets(
    ledger_url: str,
) -> None:
    spend = [
        # (ts, key, end_user, cost)
        (stamp(2026, 2, 28, 23, 59), "a", None, D("5")),  # last month: counts nowhere
        (stamp(2026, 3, 14, 10), "a", None, D("0.000000001")),  # yesterday: month only
        (stamp(2026, 3, 14, 10, 30), "a", None, D("0.3")),
        (stamp(2026, 3, 15, 0, 0), "a", "u1", D("0.25")),  # today, on the hour
        (stamp(2026, 3, 15, 12, 1), "a", "u1", D("0.125")),
        (stamp(2026, 3, 15, 12, 2), "b", None, D("1")),
    ]
    ledger = open_ledger(ledger_url)
    await ledger.start()
    for i, (ts, key, user, cost) in enumerate(spend):
        row = make_row(i, ts=ts - i)  # make_row adds i to ts
        row.key, row.end_user, row.cost_usd, row.team = key, user, cost, None
        ledger.record(row)
    await ledger.close()
    assert len(list(read_requests(ledger_url))) == len(spend)

    month_start = datetime(2026, 3, 1, tzinfo=UTC)
    rows = list(read_spend(ledger_url, month_start))
    # the two rows of yesterday 10:xx share an hour bucket
    assert len(rows) == 4
    assert sum((r["cost_usd"] for r in rows), D(0)) == D("1.675000001")

    keys = [
        KeyConfig(name="a", key="sk-a", budget_usd=10.0, budget_period="month"),
        KeyConfig(name="b", key="sk-b", budget_usd=10.0, budget_period="day"),
        KeyConfig(name="c", key="sk-c", budget_usd=1.0, budget_period="day"),
    ]
    book = BudgetBook(keys, clock=lambda: NOW)
    assert book.earliest_period() == month_start
    book.seed(rows)
    assert book.state("key:a") == (D("0.675000001"), D(0))
    assert book.state("key:b") == (D("1"), D(0))
    assert book.state("key:c") == (D(0), D(0))


def test_seeding_reads_epoch_stamps_as_utc() -> None:
    """Rows straight from `read_requests` carry `ts` as epoch seconds: a day budget must not
    count a row from earlier in the month."""
    book = BudgetBook(
        [KeyConfig(name="k", key="sk-k", budget_usd=1.0, budget_period="day")],
        clock=lambda: NOW,
    )
    book.seed(
        [
            {"key": "k", "ts": stamp(2026, 3, 14, 23, 59), "cost_usd": D("0.5")},
            {"key": "k", "ts": stamp(2026, 3, 15, 0, 1), "cost_usd": D("0.25")},
        ]
    )
    assert book.state("key:k") == (D("0.25"), D(0))


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=40 * 86400),
            st.sampled_from(["a", "b"]),
            st.decimals(min_value=0, max_value=3, places=9),
        ),
        max_size=25,
    )
)
def test_per_hour_sums_seed_what_the_rows_would(entries: list[tuple[int, str, D]]) -> None:
    """Seeding from hourly sums gives each budget exactly what seeding from the rows gives."""
    base = stamp(2026, 2, 10)
    rows = [{"key": k, "ts": base + dt, "cost_usd": c} for dt, k, c in entries]
    sums: dict[tuple[str, int], D] = {}
    for dt, k, c in entries:
        hour = int((base + dt) // 3600) * 3600
        sums[(k, hour)] = sums.get((k, hour), D(0)) + c
    hourly = [
        {"key": k, "ts": datetime.fromtimestamp(h, UTC), "cost_usd": c}
        for (k, h), c in sums.items()
    ]
    keys = [
        KeyConfig(name="a", key="sk-a", budget_usd=100.0, budget_period="day"),
        KeyConfig(name="b", key="sk-b", budget_usd=100.0, budget_period="month"),
    ]
    now = datetime.fromtimestamp(base + 30 * 86400 + 5000, UTC)
    from_rows, from_sums = (BudgetBook(keys, clock=lambda: now) for _ in range(2))
    from_rows.seed(rows)
    from_sums.seed(hourly)
    for account in ("key:a", "key:b"):
        assert from_rows.state(account) == from_sums.state(account)

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenway.accounting.ledger import RequestRow, open_ledger, read_requests
from tokenway.domain.types import Usage
from tokenway.reports.spend import render_table, spend_report


def row(i: int, key: str, model: str, cost: str, revenue: str, cached: int = 0) -> RequestRow:
    return RequestRow(
        request_id=f"r{i}",
        ts=1_764_000_000.0 + i,
        key=key,
        team=None,
        model=model,
        provider="p",
        provider_model=model,
        api="openai.chat",
        mode="realtime",
        stream=False,
        status=200 if i % 5 else 502,
        flag="OK",
        usage=Usage(input_tokens=1000, cache_read_tokens=cached, output_tokens=100),
        cost_usd=Decimal(cost),
        revenue_usd=Decimal(revenue),
        ttft_ms=None,
        latency_ms=10.0,
        attempts=[],
    )


async def write(url: str, rows: list[RequestRow]) -> None:
    ledger = open_ledger(url)
    await ledger.start()
    for r in rows:
        ledger.record(r)
    await ledger.close()


async def test_report_sums_exactly_and_groups(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    rows = [
        row(
            i,
            "app" if i % 2 else "batch",
            "m-a" if i % 3 else "m-b",
            "0.000000123",
            "0.0000002",
            500,
        )
        for i in range(30)
    ]
    await write(url, rows)
    groups, total = spend_report(read_requests(url), "key")
    assert {g.name for g in groups} == {"app", "batch"}
    assert total.requests == 30 and total.errors == 6
    assert total.cost_usd == Decimal("0.000000123") * 30
    assert sum((g.cost_usd for g in groups), Decimal(0)) == total.cost_usd
    assert total.cache_hit_rate == 0.5
    assert total.margin_usd == Decimal("0.000000077") * 30
    text = render_table(groups, total, "key")
    assert "total" in text and "50.0%" in text and "0.000003690" in text


async def test_split_by_task_and_mode_round_trips_the_ledger(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    rows = []
    for i in range(12):
        r = row(i + 1, "app", "m", "0.000000100", "0.000000150")
        r.task = ["search", "summarise", None][i % 3]
        r.mode = "batch" if i % 2 else "realtime"
        rows.append(r)
    await write(url, rows)
    groups, total = spend_report(read_requests(url), "task,mode")
    by_name = {g.name: g for g in groups}
    assert set(by_name) == {
        f"{t} / {m}" for t in ("search", "summarise", "-") for m in ("realtime", "batch")
    }
    assert all(g.requests == 2 for g in groups)
    assert by_name["search / batch"].cost_usd == Decimal("0.0000002")
    assert sum((g.margin_usd for g in groups), Decimal(0)) == total.margin_usd
    with pytest.raises(ValueError, match="'tag:'"):
        spend_report([], "task,tag:")


def test_unknown_dimension_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot group by"):
        spend_report([], "colour")


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.decimals(0, 1, places=9)), max_size=40)
)
def test_group_sums_equal_the_total(items: list[tuple[str, Decimal]]) -> None:
    rows = [
        {
            "ts": 1.0,
            "status": 200,
            "model": m,
            "input_tokens": 10,
            "cache_read_tokens": 5,
            "cache_write_tokens": 0,
            "output_tokens": 1,
            "reasoning_tokens": 0,
            "cost_usd": c,
            "revenue_usd": c * 2,
        }
        for m, c in items
    ]
    groups, total = spend_report(rows, "model")
    assert sum((g.cost_usd for g in groups), Decimal(0)) == total.cost_usd
    assert sum(g.requests for g in groups) == total.requests == len(items)


def test_cli_report_json(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    asyncio.run(write(url, [row(i, "app", "m-a", "0.001", "0.0015") for i in range(1, 4)]))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"storage: {{ledger: '{url}'}}\n")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "tokenway",
            "report",
            "--config",
            str(cfg),
            "--by",
            "model",
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["total"]["cost_usd"] == "0.003000000"
    assert doc["groups"][0]["name"] == "m-a" and doc["groups"][0]["margin_usd"] == "0.001500000"


@pytest.mark.parametrize("flag", ["--context", "--cache-margin", "--savings"])
def test_every_report_stops_at_until(tmp_path: Path, flag: str) -> None:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    # rows at T0+1 .. T0+4; --until T0+3 keeps the first two
    asyncio.run(write(url, [row(i, "app", "m-a", "0.001", "0.0015") for i in range(1, 5)]))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"storage: {{ledger: '{url}'}}\n")
    until = datetime.fromtimestamp(1_764_000_003, UTC).isoformat()
    out = subprocess.run(
        [
            *(sys.executable, "-m", "tokenway", "report", "--config", str(cfg)),
            *(flag, "--until", until, "--format", "json"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    if flag == "--context":
        (use,) = doc
        assert use["requests"] == 2
    elif flag == "--cache-margin":
        (curve,) = doc
        assert curve["requests"] == 2
    else:
        assert doc["total"]["requests"] == 2


def test_context_window_use_and_smaller_models_that_fit() -> None:
    from tokenway.reports.context import context_use, render_context

    rows = [
        {"model": "big", "status": 200, "input_tokens": n} for n in [*range(100, 10_100, 100)]
    ] + [{"model": "big", "status": 502, "input_tokens": 999_999}]
    uses = context_use(rows, {"big": 200_000, "small": 16_000, "tiny": 4_000, "other": None})
    (u,) = uses
    assert (u.requests, u.p50_tokens, u.p90_tokens, u.p99_tokens, u.max_tokens) == (
        100,
        5000,
        9000,
        9900,
        10_000,
    )
    assert u.p99_share == 9900 / 200_000
    assert u.fits == ["small"]
    assert "small" in render_context(uses)


def test_margin_rises_with_the_cache_hit_rate() -> None:
    from tokenway.accounting.prices import PriceBook
    from tokenway.config.schema import PriceConfig
    from tokenway.reports.cache_margin import margin_curves, render_curves

    prices = PriceBook(
        [PriceConfig(provider="p", model="m", input=1.0, cache_read=0.1, output=2.0)]
    )
    rows = [
        {
            "ts": 1_764_000_000.0,
            "status": 200,
            "model": "chat",
            "provider": "p",
            "provider_model": "m",
            "input_tokens": 1_000_000,
            "cache_read_tokens": 250_000,
            "cache_write_tokens": 0,
            "output_tokens": 100_000,
            "reasoning_tokens": 0,
            "cost_usd": Decimal("0.975"),
            "revenue_usd": Decimal("1.5"),
        }
    ]
    (c,) = margin_curves(rows, prices)
    assert c.actual_hit_rate == 0.25
    costs = [p.cost_usd for p in c.points]
    assert costs[0] == Decimal("1.2") and costs[-1] == Decimal("0.3")  # 1M at 1.0 vs 0.1, +0.2 out
    assert costs == sorted(costs, reverse=True)
    # today's point lies on the curve: 25% hit rate re-costs to the recorded cost
    assert c.points[0].margin_usd < c.revenue_usd - c.actual_cost_usd < c.points[-1].margin_usd
    assert "hit  50%" in render_curves([c])


def test_batch_rows_are_curved_at_batch_prices() -> None:
    from tokenway.accounting.prices import PriceBook
    from tokenway.config.schema import PriceConfig
    from tokenway.reports.cache_margin import margin_curves

    prices = PriceBook(
        [
            PriceConfig(
                provider="p",
                model="m",
                input=1.0,
                cache_read=0.1,
                output=2.0,
                multipliers={"batch": 0.5},
            )
        ]
    )
    row = {
        "ts": 1_764_000_000.0,
        "status": 200,
        "model": "chat",
        "mode": "batch",
        "provider": "p",
        "provider_model": "m",
        "input_tokens": 1_000_000,
        "cache_read_tokens": 0,
        "cache_write_tokens": 0,
        "output_tokens": 100_000,
        "reasoning_tokens": 0,
        "cost_usd": Decimal("0.6"),  # (1.0 + 0.2) at half price
        "revenue_usd": Decimal("1.5"),
    }
    (c,) = margin_curves([row], prices)
    # today's point (0% hit) lies on the curve
    assert c.points[0].cost_usd == c.actual_cost_usd == Decimal("0.6")

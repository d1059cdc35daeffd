"""`tokenway report --savings`: spend per mode against the same attempts at realtime prices.

Unit tests on rows of known usage, a property over random traffic, and a report over the
ledger of a simulated day of realtime, batch and async traffic through a real gateway.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.batch.conftest import chat_line, upload, wait_done
from tests.e2e.stack import Stack
from tokenway.accounting.ledger import (
    AttemptRow,
    RequestRow,
    open_ledger,
    read_attempts,
    read_requests,
)
from tokenway.accounting.prices import PriceBook
from tokenway.config.schema import PriceConfig, PriceWindowConfig
from tokenway.domain.types import Usage
from tokenway.reports.savings import SavingsGroup, SavingsReport, render_savings, savings_report
from tokenway.reports.spend import spend_report

T0 = 1_764_000_000.0  # 2025-11-24T16:00:00Z
# 800k uncached at 1.0 + 200k cached at 0.1 + 100k out at 2.0 per 1M: 1.02 USD in realtime
USAGE = Usage(input_tokens=1_000_000, cache_read_tokens=200_000, output_tokens=100_000)


def book(batch: float = 0.5, async_: float = 0.75, **extra: Any) -> PriceBook:
    return PriceBook(
        [
            PriceConfig(
                provider="p",
                model="m",
                input=1.0,
                cache_read=0.1,
                output=2.0,
                multipliers={"batch": batch, "async": async_},
                **extra,
            )
        ]
    )


def request(
    prices: PriceBook,
    i: int,
    mode: str,
    usages: list[Usage],
    *,
    model: str = "chat",
    provider_model: str = "m",
    ts: float | None = None,
    attempt_ts: float | None = None,
) -> RequestRow:
    """A request row whose attempts are priced as the gateway prices them: in `mode`, at the
    request's start."""
    start = T0 + i if ts is None else ts
    at = datetime.fromtimestamp(start, UTC)
    attempts = [
        AttemptRow(
            request_id=f"r{i}",
            seq=n,
            ts=start + n if attempt_ts is None else attempt_ts,
            provider="p",
            provider_model=provider_model,
            status=200 if n == len(usages) - 1 else 503,
            flag="OK" if n == len(usages) - 1 else "U5XX",
            usage=u,
            cost_usd=prices.cost("p", provider_model, u, at, mode=mode),
            latency_ms=5.0,
        )
        for n, u in enumerate(usages)
    ]
    return RequestRow(
        request_id=f"r{i}",
        ts=start,
        key="app",
        model=model,
        provider="p",
        provider_model=provider_model,
        api="openai.chat",
        mode=mode,
        status=200,
        flag="OK",
        usage=usages[-1],
        cost_usd=sum((a.cost_usd for a in attempts), Decimal(0)),
        revenue_usd=Decimal(0),
        latency_ms=5.0,
        attempts=attempts,
    )


def as_dicts(rows: list[RequestRow]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The rows as `read_requests` and `read_attempts` yield them, without a database."""
    requests, attempts = [], []
    for r in rows:
        doc = msgspec.structs.asdict(r)
        doc.update(msgspec.structs.asdict(r.usage))
        requests.append(doc)
        for a in r.attempts:
            adoc = msgspec.structs.asdict(a)
            adoc.update(msgspec.structs.asdict(a.usage))
            attempts.append(adoc)
    return requests, attempts


async def write(url: str, rows: list[RequestRow]) -> None:
    ledger = open_ledger(url)
    await ledger.start()
    for r in rows:
        ledger.record(r)
    await ledger.close()


def by_mode(report: SavingsReport) -> dict[str, SavingsGroup]:
    return {g.mode: g for g in report.modes}


# ---- (a) known usage, exact savings --------------------------------------------------------


async def test_batch_and_async_savings_are_exact_over_the_ledger(tmp_path: Path) -> None:
    prices = book()
    billed_failure = Usage(input_tokens=1_000_000)  # a 503 that still billed its prompt
    rows = [
        request(prices, 1, "realtime", [USAGE]),
        request(prices, 2, "batch", [USAGE]),
        request(prices, 3, "batch", [billed_failure, USAGE]),
        request(prices, 4, "async", [USAGE]),
    ]
    assert rows[0].cost_usd == Decimal("1.02")
    assert rows[1].cost_usd == Decimal("0.51")
    assert rows[3].cost_usd == Decimal("0.765")
    url = f"sqlite:///{tmp_path / 'l.db'}"
    await write(url, rows)

    report = savings_report(read_requests(url), read_attempts(url), prices, by="mode")
    assert [g.mode for g in report.modes] == ["realtime", "batch", "async"]
    assert report.groups == []
    m = by_mode(report)
    assert (m["realtime"].cost_usd, m["realtime"].saving_usd) == (Decimal("1.02"), 0)
    # batch: 0.51 + (0.5 + 0.51) at half of 1.02 + (1.0 + 1.02)
    assert m["batch"].requests == 2 and m["batch"].attempts == 3
    assert m["batch"].cost_usd == Decimal("1.52")
    assert m["batch"].realtime_cost_usd == Decimal("3.04")
    assert m["batch"].saving_usd == Decimal("1.52") and m["batch"].saving_pct == 50.0
    assert m["async"].cost_usd == Decimal("0.765")
    assert m["async"].realtime_cost_usd == Decimal("1.02")
    assert m["async"].saving_usd == Decimal("0.255") and m["async"].saving_pct == 25.0
    assert report.total.cost_usd == Decimal("3.305")
    assert report.total.realtime_cost_usd == Decimal("5.08")
    assert report.total.saving_usd == Decimal("1.775")
    assert report.deferred.saving_usd == Decimal("1.775")
    assert (report.deferred.requests, report.total.requests) == (3, 4)
    # the spend side is the ledger's own cost, as the spend report sums it
    groups, total = spend_report(read_requests(url), "mode")
    assert total.cost_usd == report.total.cost_usd
    assert {g.name: g.cost_usd for g in groups} == {g.mode: g.cost_usd for g in report.modes}

    doc = report.to_dict()
    assert doc["total"]["saving_usd"] == "1.775000000"
    assert doc["modes"][1] | {"saving_pct": None} == {
        "name": "batch",
        "mode": "batch",
        "requests": 2,
        "attempts": 3,
        "unpriced": 0,
        "input_tokens": 2_000_000,
        "output_tokens": 200_000,
        "cost_usd": "1.520000000",
        "realtime_cost_usd": "3.040000000",
        "saving_usd": "1.520000000",
        "saving_pct": None,
    }
    text = render_savings(report)
    assert "batch and async saved 1.775000000 USD against realtime prices" in text
    assert "50.0%" in text and "25.0%" in text and "3.305000000" in text


async def test_a_postgresql_ledger_gives_the_same_report(pg_url: str, tmp_path: Path) -> None:
    prices = book()
    rows = [
        request(prices, i, mode, [Usage(input_tokens=1000 * i, output_tokens=7 * i)])
        for i, mode in enumerate(["realtime", "batch", "async", "batch", "async"], start=1)
    ]
    sqlite = f"sqlite:///{tmp_path / 'l.db'}"
    for url in (sqlite, pg_url):
        await write(url, rows)
    reports = [
        savings_report(read_requests(url), read_attempts(url), prices, by="model,mode").to_dict()
        for url in (sqlite, pg_url)
    ]
    assert reports[0] == reports[1]
    assert reports[0]["total"]["requests"] == 5


def test_split_by_model_adds_up_to_each_mode() -> None:
    prices = book()
    rows = [
        request(prices, i, mode, [USAGE], model=model)
        for i, (mode, model) in enumerate(
            [("batch", "a"), ("batch", "b"), ("batch", "a"), ("async", "b"), ("realtime", "a")]
        )
    ]
    report = savings_report(*as_dicts(rows), prices, by="model,mode")
    assert report.by == "model"
    assert [g.name for g in report.groups] == [
        "realtime / a",
        "batch / a",
        "batch / b",
        "async / b",
    ]
    for mode in report.modes:
        parts = [g for g in report.groups if g.mode == mode.mode]
        assert sum((g.cost_usd for g in parts), Decimal(0)) == mode.cost_usd
        assert sum((g.saving_usd for g in parts), Decimal(0)) == mode.saving_usd
    assert report.groups[1].saving_usd == Decimal("1.02")  # two batch requests of model a
    text = render_savings(report)
    assert "mode / model" in text and "  batch / b" in text
    with pytest.raises(ValueError, match="cannot split savings by 'colour'"):
        savings_report([], [], prices, by="colour")


def test_until_and_attempts_of_other_requests_are_left_out() -> None:
    prices = book()
    rows = [request(prices, i, "batch", [USAGE]) for i in range(4)]
    requests, attempts = as_dicts(rows)
    # `since` is applied by read_requests: attempts of requests before it must not count
    report = savings_report(
        requests[1:], attempts, prices, until=datetime.fromtimestamp(T0 + 3, UTC)
    )
    assert report.total.requests == 2 and report.total.attempts == 2
    assert report.total.cost_usd == Decimal("1.02")


def test_the_counterfactual_is_priced_when_the_request_started() -> None:
    # The price doubles at T0 + 60 s. A batch request that started before it and whose
    # attempt ran after it was billed at the old price; so is its realtime counterfactual.
    old = PriceConfig(provider="p", model="m", input=1.0, output=1.0, multipliers={"batch": 0.5})
    new = PriceConfig(
        provider="p",
        model="m",
        input=2.0,
        output=2.0,
        multipliers={"batch": 0.5},
        effective_from=datetime.fromtimestamp(T0 + 60, UTC).isoformat(),
    )
    prices = PriceBook([old, new])
    usage = Usage(input_tokens=1_000_000)
    row = request(prices, 1, "batch", [usage], ts=T0, attempt_ts=T0 + 120)
    late = request(prices, 2, "batch", [usage], ts=T0 + 120)
    assert (row.cost_usd, late.cost_usd) == (Decimal("0.5"), Decimal("1.0"))
    report = savings_report(*as_dicts([row, late]), prices)
    assert report.total.realtime_cost_usd == Decimal("3.0")
    assert report.total.saving_usd == Decimal("1.5")


def test_time_of_day_windows_apply_to_both_sides() -> None:
    # 16:00-17:00 UTC at half price; T0 is 16:00 UTC
    prices = book(windows=[PriceWindowConfig(start="16:00", end="17:00", multiplier=0.5)])
    row = request(prices, 1, "batch", [USAGE])
    assert row.cost_usd == Decimal("0.255")
    report = savings_report(*as_dicts([row]), prices)
    assert report.total.realtime_cost_usd == Decimal("0.51")


def test_a_batch_service_tier_is_not_kept_at_realtime() -> None:
    # Anthropic reports a batch request's tier as "batch"; the price book reads it as the
    # batch mode, which the counterfactual must not inherit.
    prices = book()
    usage = msgspec.structs.replace(USAGE, service_tier="batch")
    row = request(prices, 1, "batch", [usage])
    assert row.cost_usd == Decimal("0.51")
    report = savings_report(*as_dicts([row]), prices)
    assert report.total.realtime_cost_usd == Decimal("1.02")


def test_an_unpriced_model_claims_no_saving() -> None:
    prices = book()
    rows = [request(prices, 1, "batch", [USAGE]), request(prices, 2, "batch", [USAGE])]
    requests, attempts = as_dicts(rows)
    # a model the price book no longer knows, recorded at a cost of its own
    attempts[1]["provider_model"] = "no-such-model-anywhere"
    attempts[1]["cost_usd"] = Decimal("0.3")
    report = savings_report(requests, attempts, prices)
    (batch,) = report.modes
    assert batch.unpriced == 1
    assert batch.cost_usd == Decimal("0.81") and batch.realtime_cost_usd == Decimal("1.32")
    assert "1 attempts have no price in the price book" in render_savings(report)


def test_realtime_rows_count_at_their_own_cost() -> None:
    # A price edited since the rows were written does not invent a realtime saving.
    rows = [request(book(), 1, "realtime", [USAGE])]
    cheaper = PriceBook([PriceConfig(provider="p", model="m", input=0.1, output=0.1)])
    report = savings_report(*as_dicts(rows), cheaper)
    assert report.total.saving_usd == 0 and report.total.saving_pct == 0.0
    assert savings_report([], [], cheaper).total.saving_pct is None


# ---- (b) property: no negative saving, exact sums -------------------------------------------

_MODES = st.sampled_from(["realtime", "batch", "async"])
_TRAFFIC = st.lists(
    st.tuples(
        _MODES,
        st.sampled_from(["a", "b"]),
        st.integers(0, 2_000_000),
        st.integers(0, 100),  # percent of the prompt read from cache
        st.integers(0, 200_000),
        st.integers(1, 3),  # attempts
    ),
    max_size=30,
)
_MULTIPLIER = st.decimals(0, 1, places=2)


@settings(max_examples=60, deadline=None)
@given(_TRAFFIC, _MULTIPLIER, _MULTIPLIER)
def test_savings_are_never_negative_and_modes_add_up_to_the_total(
    traffic: list[tuple[str, str, int, int, int, int]], batch: Decimal, async_: Decimal
) -> None:
    prices = book(batch=float(batch), async_=float(async_))
    rows = [
        request(
            prices,
            i,
            mode,
            [
                Usage(input_tokens=n, cache_read_tokens=n * hit // 100, output_tokens=out)
                for _ in range(tries)
            ],
            model=model,
        )
        for i, (mode, model, n, hit, out, tries) in enumerate(traffic)
    ]
    report = savings_report(*as_dicts(rows), prices, by="model")
    for g in [*report.modes, *report.groups, report.deferred, report.total]:
        assert g.saving_usd >= 0, g
        assert g.cost_usd <= g.realtime_cost_usd
    for field in ("cost_usd", "realtime_cost_usd", "saving_usd"):
        assert sum((getattr(g, field) for g in report.modes), Decimal(0)) == getattr(
            report.total, field
        )
        assert sum((getattr(g, field) for g in report.groups), Decimal(0)) == getattr(
            report.total, field
        )
    assert sum(g.requests for g in report.modes) == report.total.requests == len(traffic)
    assert report.total.cost_usd == sum((r.cost_usd for r in rows), Decimal(0))
    realtime = [g for g in report.modes if g.mode == "realtime"]
    assert all(g.saving_usd == 0 for g in realtime)


# ---- (c) a simulated day through a real gateway ---------------------------------------------

DAY_START = 1_795_737_600.0  # 2026-11-27T00:00:00Z
KEY = "sk-savings-app"
BATCH, ASYNC = Decimal("0.5"), Decimal("0.25")
PRICES = [
    {
        "provider": "openai",
        "model": "gpt-4o-mini",
        "input": 0.15,
        "output": 0.6,
        "multipliers": {"batch": float(BATCH), "async": float(ASYNC)},
    }
]


def day_doc(ledger: Path) -> dict[str, Any]:
    return {
        "storage": {"ledger": f"sqlite:///{ledger}"},
        "sim": [
            {
                "name": "so",
                "kind": "openai",
                "scenario": {"ttft_ms": 1, "tokens_per_s": 5000, "output_tokens": 16},
            }
        ],
        "providers": [{"name": "openai", "kind": "openai", "base_url": "sim://so"}],
        "models": [{"name": "m-chat", "targets": [{"provider": "openai", "model": "gpt-4o-mini"}]}],
        "prices": PRICES,
        "keys": [{"name": "app", "key": KEY}],
        "batch": {"concurrency": 2},
    }


def async_task(stack: Stack, app: Any, n: int, started: float) -> RequestRow:
    """Run one chat request in-process in mode async, as an async task will, and write its row
    to the ledger. (Async tasks are not served yet: this is the in-process path batch lines
    take, with mode="async", and the row goes through the ledger's writer.)"""
    from tokenway.gateway import internal

    principal = msgspec.structs.replace(stack.rt.keys.authenticate(KEY), priority="low")
    body = json.dumps(chat_line(f"a{n}", f"summarise report {n}")["body"]).encode()
    call = internal.InternalCall(
        principal=principal, request_id=f"async-{n}", mode="async", started=started
    )
    answer = stack.run(internal.call(app, "/v1/chat/completions", body, call))
    assert answer.status == 200, answer.body
    assert answer.row is not None and answer.row.mode == "async"
    stack.rt.ledger.record(answer.row)
    return answer.row


@pytest.fixture(scope="module")
def day(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Path]]:
    from tokenway.gateway.app import Gateway

    tmp = tmp_path_factory.mktemp("savings")
    s = Stack(day_doc(tmp / "ledger.db")).start()
    client = openai.OpenAI(base_url=s.url + "/v1", api_key=KEY, max_retries=0)
    # The gateway's clock is moved by hand: an hour per step through 2026-11-27. It stands
    # still while the batch runs, so the batch's own deadlines do not race through the day.
    now = [DAY_START]
    s.rt.now = lambda: now[0]
    app = Gateway(s.rt)
    for hour in range(24):
        now[0] = DAY_START + hour * 3600 + 90
        client.chat.completions.create(
            model="m-chat", messages=[{"role": "user", "content": f"question {hour}"}]
        )
        if hour % 4 == 2:
            async_task(s, app, hour, now[0] + 30)
        if hour == 12:
            lines = [chat_line(f"c{i}", f"classify ticket {i}") for i in range(6)]
            batch = client.batches.create(
                input_file_id=upload(client, lines),
                endpoint="/v1/chat/completions",
                completion_window="24h",
            )
            done = wait_done(client, batch.id)
            assert done.status == "completed", done
    s.flush()
    client.close()
    cfg = tmp / "report.yaml"
    cfg.write_text(
        json.dumps(
            {
                "storage": {"ledger": f"sqlite:///{tmp / 'ledger.db'}"},
                "providers": [
                    {"name": "openai", "kind": "openai", "base_url": "http://127.0.0.1:9/v1"}
                ],
                "prices": PRICES,
            }
        )
    )
    yield s, cfg
    s.stop()


def cli(cfg: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "tokenway", "report", "--config", str(cfg), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_simulated_day_reports_each_modes_spend_and_saving(day: tuple[Stack, Path]) -> None:
    stack, cfg = day
    url = stack.config.raw.storage.ledger
    rows = list(read_requests(url))
    counts = {m: sum(r["mode"] == m for r in rows) for m in ("realtime", "batch", "async")}
    assert counts == {"realtime": 24, "batch": 6, "async": 6}
    assert all(r["status"] == 200 and r["cost_usd"] > 0 for r in rows)

    report = savings_report(rows, read_attempts(url), stack.rt.prices)
    m = by_mode(report)
    assert [g.mode for g in report.modes] == ["realtime", "batch", "async"]
    spend = {g.name: g.cost_usd for g in spend_report(rows, "mode")[0]}
    for mode in ("realtime", "batch", "async"):
        assert m[mode].requests == counts[mode] and m[mode].attempts == counts[mode]
        assert m[mode].cost_usd == spend[mode] > 0
    assert m["realtime"].saving_usd == 0
    # batch at half price saved what it cost; async at a quarter saved three times its cost
    assert m["batch"].realtime_cost_usd == m["batch"].cost_usd / BATCH
    assert m["batch"].saving_usd == m["batch"].cost_usd > 0
    assert m["async"].realtime_cost_usd == m["async"].cost_usd / ASYNC
    assert m["async"].saving_usd == 3 * m["async"].cost_usd > 0
    assert report.deferred.saving_usd == m["batch"].saving_usd + m["async"].saving_usd
    assert report.total.saving_usd == report.deferred.saving_usd

    since = datetime.fromtimestamp(DAY_START, UTC).isoformat().replace("+00:00", "Z")
    doc = json.loads(cli(cfg, "--savings", "--by", "mode", "--format", "json", "--since", since))
    assert [g["mode"] for g in doc["modes"]] == ["realtime", "batch", "async"]
    for g in doc["modes"]:
        exact = m[g["mode"]]
        assert g["requests"] == exact.requests
        assert g["cost_usd"] == f"{exact.cost_usd:.9f}"
        assert g["realtime_cost_usd"] == f"{exact.realtime_cost_usd:.9f}"
        assert g["saving_usd"] == f"{exact.saving_usd:.9f}"
    assert doc["modes"][1]["saving_pct"] == 50.0 and doc["modes"][2]["saving_pct"] == 75.0
    assert doc["total"]["saving_usd"] == f"{report.total.saving_usd:.9f}"

    table = cli(cfg, "--savings")
    assert "mode / model" in table and "  batch / m-chat" in table and "  async / m-chat" in table
    assert f"batch and async saved {report.deferred.saving_usd:.9f} USD" in table

    page = Path(cfg.parent / "report.html")
    cli(cfg, "--html", str(page))
    html = page.read_text()
    assert "Batch and async savings against realtime prices" in html
    section = html.split('<table class="savings">', 1)[1].split("</table>", 1)[0]
    for mode in ("realtime", "batch", "async", "total"):
        assert f"<td>{mode}</td>" in section
    assert f"<td>{m['async'].saving_usd:.9f}</td>" in section

"""The ledger: background writes, idempotency, migrations, URLs.

Tests taking `ledger_url` run against SQLite and PostgreSQL (tests/accounting/conftest.py);
the rest are about SQLite itself. PostgreSQL's own are in test_postgres_ledger.py.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from tokenway.accounting import sqlite as db
from tokenway.accounting.ledger import (
    AttemptRow,
    RequestRow,
    SqliteLedger,
    open_ledger,
    read_attempts,
    read_requests,
)
from tokenway.accounting.postgres import PostgresLedger
from tokenway.accounting.schema import MIGRATIONS
from tokenway.domain.types import Usage


def make_row(i: int, *, ts: float = 1_790_000_000.0, attempts: int = 1) -> RequestRow:
    usage = Usage(
        input_tokens=1000 + i,
        cache_read_tokens=i % 500,
        cache_write_tokens=7,
        cache_write_1h_tokens=3,
        output_tokens=50,
        reasoning_tokens=5,
        service_tier="default",
    )
    cost = Decimal(i) / Decimal(10**9)
    tries = [
        AttemptRow(
            request_id=f"req-{i}",
            seq=s,
            ts=ts + s,
            provider="openai" if s == attempts - 1 else "deepseek",
            provider_model="gpt-4o-mini",
            status=200 if s == attempts - 1 else 503,
            flag="OK" if s == attempts - 1 else "UPSTREAM5XX",
            usage=usage if s == attempts - 1 else Usage(),
            cost_usd=cost if s == attempts - 1 else Decimal(0),
            latency_ms=12.5,
            ttft_ms=3.25,
            error=None if s == attempts - 1 else "upstream said 503",
        )
        for s in range(attempts)
    ]
    return RequestRow(
        request_id=f"req-{i}",
        ts=ts + i,
        key="app",
        team="search",
        model="chat-fast",
        provider="openai",
        provider_model="gpt-4o-mini",
        api="openai.chat",
        stream=i % 2 == 0,
        status=200,
        flag="OK",
        usage=usage,
        cost_usd=cost,
        revenue_usd=cost * 2,
        ttft_ms=3.25,
        latency_ms=12.5,
        attempts=tries,
    )


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"  # path is absolute, so this is the four-slash form


async def test_rows_from_threads_and_tasks_all_land(ledger_url: str) -> None:
    url = ledger_url
    ledger = open_ledger(url)
    await ledger.start()

    def from_thread(base: int) -> None:
        for i in range(base, base + 250):
            ledger.record(make_row(i))

    threads = [threading.Thread(target=from_thread, args=(t * 1000,)) for t in range(4)]
    for t in threads:
        t.start()

    async def from_task(base: int) -> None:
        for i in range(base, base + 250):
            ledger.record(make_row(i, attempts=2))
            if i % 50 == 0:
                await asyncio.sleep(0)

    await asyncio.gather(*(from_task(10_000 + k * 1000) for k in range(4)))
    for t in threads:
        await asyncio.to_thread(t.join)
    await ledger.close()

    rows = list(read_requests(url))
    assert len(rows) == 2000
    ids = [r["request_id"] for r in rows]
    assert len(set(ids)) == 2000
    expected = sum(
        (
            make_row(i).cost_usd
            for b in (0, 1000, 2000, 3000, 10_000, 11_000, 12_000, 13_000)
            for i in range(b, b + 250)
        ),
        Decimal(0),
    )
    assert sum((r["cost_usd"] for r in rows), Decimal(0)) == expected
    assert [r["ts"] for r in rows] == sorted(r["ts"] for r in rows)
    assert sum(1 for _ in read_attempts(url)) == 1000 + 1000 * 2
    assert ledger.lost == 0


async def test_row_round_trips_exactly(ledger_url: str) -> None:
    url = ledger_url
    ledger = open_ledger(url)
    await ledger.start()
    row = make_row(7, attempts=2)
    row.cost_usd = Decimal("0.000000000000000000123")
    ledger.record(row)
    await ledger.close()
    (got,) = read_requests(url)
    assert got["cost_usd"] == Decimal("0.000000000000000000123")
    assert got["revenue_usd"] == Decimal("0.000000014")
    assert got["stream"] is False and got["attempts"] == 2 and got["team"] == "search"
    assert (got["input_tokens"], got["cache_read_tokens"], got["cache_write_tokens"]) == (
        1007,
        7,
        7,
    )
    assert (got["cache_write_1h_tokens"], got["output_tokens"], got["reasoning_tokens"]) == (
        3,
        50,
        5,
    )
    assert (got["service_tier"], got["usage_source"], got["mode"]) == (
        "default",
        "provider",
        "realtime",
    )
    first, second = read_attempts(url, "req-7")
    assert (first["seq"], first["status"], first["error"]) == (0, 503, "upstream said 503")
    assert (second["provider"], second["cost_usd"]) == ("openai", Decimal("7E-9"))


async def test_nul_in_client_text_never_costs_the_row(ledger_url: str) -> None:
    # PostgreSQL text and jsonb cannot hold U+0000: such a row used to be dropped, unbilled
    url = ledger_url
    ledger = open_ledger(url)
    await ledger.start()
    row = make_row(3, attempts=2)
    row.end_user, row.task, row.tags = "u\x00ser", "t\x00", {"k\x00": "v\x00"}
    row.attempts[0].error = "upstream said \x00"
    ledger.record(row)
    await ledger.close()
    assert ledger.lost == 0
    (got,) = read_requests(url)
    assert (got["end_user"], got["task"]) == ("u\ufffdser", "t\ufffd")
    assert got["tags"] == {"k\ufffd": "v\ufffd"}
    first, _ = read_attempts(url, "req-3")
    assert first["error"] == "upstream said \ufffd"


async def test_attempts_since_a_moment(ledger_url: str) -> None:
    url = ledger_url
    ledger = open_ledger(url)
    await ledger.start()
    t0 = 1_790_000_000.0
    for i in range(4):  # two attempts each, at t0 + 10i and t0 + 10i + 1
        ledger.record(make_row(i, ts=t0 + 10 * i, attempts=2))
    await ledger.close()
    since = datetime.fromtimestamp(t0 + 20, UTC)
    got = [(a["request_id"], a["seq"]) for a in read_attempts(url, since=since)]
    assert got == [("req-2", 0), ("req-2", 1), ("req-3", 0), ("req-3", 1)]
    later = datetime.fromtimestamp(t0 + 11, UTC)
    assert [a["seq"] for a in read_attempts(url, "req-1", since=later)] == [1]
    assert len(list(read_attempts(url))) == 8


async def test_same_request_id_twice_is_one_row(ledger_url: str) -> None:
    url = ledger_url
    ledger = open_ledger(url)
    await ledger.start()
    ledger.record(make_row(1, attempts=2))
    ledger.record(make_row(1, attempts=2))  # same batch
    await ledger.flush()
    ledger.record(make_row(1, attempts=2))  # a later batch
    await ledger.close()
    again = open_ledger(url)  # and after a restart (replay)
    await again.start()
    again.record(make_row(1, attempts=2))
    again.record(make_row(2))
    await again.close()
    assert [r["request_id"] for r in read_requests(url)] == ["req-1", "req-2"]
    assert len(list(read_attempts(url, "req-1"))) == 2
    assert ledger.lost == again.lost == 0  # duplicates are ignored, not errors


async def test_flush_makes_rows_readable_while_open(ledger_url: str) -> None:
    url = ledger_url
    ledger = open_ledger(url)
    await ledger.start()
    for i in range(10):
        ledger.record(make_row(i))
    await ledger.flush()
    assert len(list(read_requests(url))) == 10
    await ledger.close()


async def test_record_before_start_is_written_on_close(ledger_url: str) -> None:
    url = ledger_url
    ledger = open_ledger(url)
    ledger.record(make_row(1))
    await ledger.close()
    assert len(list(read_requests(url))) == 1


async def test_record_after_close_never_raises_and_is_counted(ledger_url: str) -> None:
    ledger = open_ledger(ledger_url)
    await ledger.start()
    await ledger.close()
    await ledger.close()  # idempotent
    ledger.record(make_row(1))
    assert ledger.lost == 1


async def test_a_bad_row_is_dropped_alone(ledger_url: str) -> None:
    url = ledger_url
    ledger = open_ledger(url)
    await ledger.start()
    bad = make_row(2)
    bad.key = None  # type: ignore[assignment]  # violates NOT NULL
    for row in (make_row(1), bad, make_row(3)):
        ledger.record(row)
    await ledger.close()
    assert [r["request_id"] for r in read_requests(url)] == ["req-1", "req-3"]
    assert [a["request_id"] for a in read_attempts(url)] == ["req-1", "req-3"]
    assert ledger.lost == 1


async def test_two_writers_share_one_database(ledger_url: str) -> None:
    # as two worker processes would: separate connections (SQLite: WAL and the busy timeout)
    url = ledger_url
    a, b = open_ledger(url), open_ledger(url)
    await asyncio.gather(a.start(), b.start())
    for i in range(300):
        (a if i % 2 else b).record(make_row(i))
    await asyncio.gather(a.close(), b.close())
    assert len(list(read_requests(url))) == 300


async def test_migrations_rerun_are_noops(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    first = open_ledger(sqlite_url(path))
    await first.start()
    first.record(make_row(1))
    await first.close()
    second = open_ledger(sqlite_url(path))
    await second.start()
    await second.close()
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        assert db.apply_migrations(conn) == []
        versions = [v for (v,) in conn.execute("SELECT version FROM schema_migrations")]
        assert versions == [m.version for m in MIGRATIONS]
        assert conn.execute("SELECT COUNT(*) FROM requests").fetchone() == (1,)
    finally:
        conn.close()


async def test_fresh_database_gets_every_migration(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "new.db", isolation_level=None)
    try:
        assert db.apply_migrations(conn) == [m.version for m in MIGRATIONS]
        indexes = {n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
        assert {"requests_ts", "requests_key_ts", "requests_model_ts"} <= indexes
    finally:
        conn.close()


async def test_newer_schema_refuses_to_start(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    conn = sqlite3.connect(path, isolation_level=None)
    db.apply_migrations(conn)
    conn.execute("INSERT INTO schema_migrations VALUES (999, 'from the future', 0)")
    conn.close()
    ledger = open_ledger(sqlite_url(path))
    with pytest.raises(db.SchemaTooNew, match="999"):
        await ledger.start()


async def test_relative_sqlite_url_is_relative_to_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    ledger = open_ledger("sqlite:///data/dir/ledger.db")
    await ledger.start()
    ledger.record(make_row(1))
    await ledger.close()
    assert (tmp_path / "data" / "dir" / "ledger.db").is_file()
    assert len(list(read_requests("sqlite:///data/dir/ledger.db"))) == 1


async def test_named_memory_ledger_is_readable_while_open() -> None:
    ledger = open_ledger("memory://acct-test")
    await ledger.start()
    ledger.record(make_row(1))
    await ledger.flush()
    assert [r["request_id"] for r in read_requests("memory://acct-test")] == ["req-1"]
    await ledger.close()


async def test_private_memory_ledgers_are_separate() -> None:
    a, b = open_ledger("memory://"), open_ledger("memory://")
    assert a.url != b.url
    await a.start()
    await b.start()
    a.record(make_row(1))
    await a.flush()
    await b.flush()
    assert len(list(read_requests(a.url))) == 1
    assert list(read_requests(b.url)) == []
    await a.close()
    await b.close()


def test_url_forms() -> None:
    assert db.parse_url("sqlite:///rel/x.db").path == Path("rel/x.db")
    assert db.parse_url("sqlite:////abs/x.db").path == Path("/abs/x.db")
    assert isinstance(open_ledger("postgresql://u@h:5432/db"), PostgresLedger)  # not connected
    assert isinstance(open_ledger("postgres://u@h/db?schema=x"), PostgresLedger)
    for bad in ("ledger.db", "sqlite://", "sqlite:///", "mysql://h/db", "postgresql://u@h/db"):
        with pytest.raises(ValueError):
            SqliteLedger(bad)
    with pytest.raises(ValueError, match="PostgreSQL"):
        db.parse_url("postgresql://u@h:5432/db")
    with pytest.raises(ValueError):
        open_ledger("mysql://h/db")


def test_reading_a_missing_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="ledger database not found"):
        list(read_requests(sqlite_url(tmp_path / "nope.db")))

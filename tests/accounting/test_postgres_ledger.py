"""The PostgreSQL ledger: same rows as SQLite, partitions, migrations, the spool and outages.

The shared server (127.0.0.1:5432) is never stopped: outage tests start a private server of
their own (initdb + pg_ctl, a temporary data directory and a free port).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.private_pg import PrivatePostgres, free_port
from tokenway.accounting import postgres, spool
from tokenway.accounting.ledger import (
    AttemptRow,
    RequestRow,
    open_ledger,
    read_attempts,
    read_requests,
)
from tokenway.accounting.postgres import PostgresLedger, parse_url, spool_record
from tokenway.accounting.schema import PG_MIGRATIONS
from tokenway.accounting.spool import Spool
from tokenway.accounting.sqlite import SchemaTooNew
from tokenway.domain.types import Usage

JAN_31_LATE = datetime(2026, 1, 31, 23, 59, 59, 500000, tzinfo=UTC).timestamp()


def full_row(i: int, ts: float = 1_790_000_000.25, *, tries: int = 2) -> RequestRow:
    """A request that sets every field, with `tries` attempts one second apart."""
    usage = Usage(
        input_tokens=1200 + i,
        cache_read_tokens=1000,
        cache_write_tokens=100,
        cache_write_1h_tokens=40,
        output_tokens=77,
        reasoning_tokens=12,
        service_tier="priority",
    )
    attempts = [
        AttemptRow(
            request_id=f"req-{i}",
            seq=s,
            ts=ts + s,
            provider="anthropic" if s else "openai",
            provider_model="claude-sonnet-4-5" if s else "gpt-4o",
            status=200 if s == tries - 1 else 429,
            flag="OK" if s == tries - 1 else "RATELIMIT",
            usage=usage if s == tries - 1 else Usage(),
            cost_usd=Decimal("0.000123456789012345678") if s == tries - 1 else Decimal(0),
            latency_ms=812.125,
            ttft_ms=None if s < tries - 1 else 97.5,
            error=None if s == tries - 1 else "429: slow down",
        )
        for s in range(tries)
    ]
    return RequestRow(
        request_id=f"req-{i}",
        ts=ts + i / 1000,
        key="app",
        team="search",
        model="chat-smart",
        provider="anthropic",
        provider_model="claude-sonnet-4-5",
        api="anthropic.messages",
        mode="batch",
        stream=True,
        status=200,
        flag="OK",
        usage=usage,
        cost_usd=Decimal("0.000123456789012345678"),
        revenue_usd=Decimal("0.000246913578024691356"),
        ttft_ms=97.5,
        latency_ms=1624.0625,
        attempts=attempts,
        end_user="user-42",
        tags={"feature": "search", "tier": "gold"},
        task="summarise",
    )


async def write(url: str, rows: list[RequestRow]) -> int:
    ledger = open_ledger(url)
    await ledger.start()
    for row in rows:
        ledger.record(row)
    await ledger.close()
    return ledger.lost


async def query(url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    target = parse_url(url)
    conn = await asyncpg.connect(target.dsn, server_settings={"search_path": target.schema})
    try:
        rows: list[asyncpg.Record] = await conn.fetch(sql, *args)
        return rows
    finally:
        await conn.close()


async def wait_for(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


# ---- the same rows as SQLite --------------------------------------------------------------


async def test_both_backends_read_back_the_same_rows(pg_url: str, tmp_path: Path) -> None:
    sqlite = f"sqlite:///{tmp_path / 'l.db'}"
    rows = [full_row(1), full_row(2, tries=1)]
    bare = full_row(3, tries=0)
    bare.team = bare.provider = bare.provider_model = bare.ttft_ms = None
    bare.end_user = bare.tags = bare.task = None
    bare.usage = Usage()
    rows.append(bare)
    assert await write(sqlite, rows) == 0
    assert await write(pg_url, rows) == 0
    got = list(read_requests(pg_url))
    assert got == list(read_requests(sqlite))
    assert [type(v) for v in got[0].values()] == [type(v) for v in got[1].values()]
    assert got[0]["tags"] == {"feature": "search", "tier": "gold"}
    assert got[0]["cost_usd"] == Decimal("0.000123456789012345678")
    assert isinstance(got[0]["cost_usd"], Decimal) and got[0]["ts"] == rows[0].ts
    assert list(read_attempts(pg_url)) == list(read_attempts(sqlite))
    assert list(read_attempts(pg_url, "req-2")) == list(read_attempts(sqlite, "req-2"))
    since = datetime.fromtimestamp(rows[1].ts, UTC)
    assert [r["request_id"] for r in read_requests(pg_url, since)] == ["req-2", "req-3"]


money = st.decimals(
    min_value=Decimal("-1e12"), max_value=Decimal("1e12"), allow_nan=False, allow_infinity=False
)


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(amounts=st.lists(money, min_size=1, max_size=30))
def test_money_is_exact_at_any_scale(pg_url: str, amounts: list[Decimal]) -> None:
    rows = []
    stamp = time.time_ns()
    for i, amount in enumerate(amounts):
        row = full_row(i, tries=1)
        row.request_id = f"m{stamp}-{i}"
        row.attempts[0].request_id = row.request_id
        row.cost_usd, row.revenue_usd = amount, -amount
        rows.append(row)
    asyncio.run(write(pg_url, rows))  # the test's own loop: hypothesis calls this function
    got = {
        r["request_id"]: r
        for r in read_requests(pg_url)
        if r["request_id"].startswith(f"m{stamp}-")
    }
    assert [(got[r.request_id]["cost_usd"], got[r.request_id]["revenue_usd"]) for r in rows] == [
        (a, -a) for a in amounts
    ]


# ---- schema: partitions, migrations, idempotency -----------------------------------------


async def test_rows_land_in_monthly_partitions_and_replays_are_noops(pg_url: str) -> None:
    feb_1 = datetime(2026, 2, 1, tzinfo=UTC).timestamp()
    rows = [
        full_row(0, JAN_31_LATE - 86400),
        full_row(1, JAN_31_LATE - 0.001),  # its second attempt is in February
        full_row(2, feb_1 - 0.002),  # ts lands exactly on the February boundary
        full_row(3, datetime(2031, 7, 4, tzinfo=UTC).timestamp()),
    ]
    assert await write(pg_url, rows) == 0
    placed = await query(
        pg_url, "SELECT tableoid::regclass::text AS part, request_id FROM requests ORDER BY ts"
    )
    assert [(r["part"], r["request_id"]) for r in placed] == [
        ("requests_2026_01", "req-0"),
        ("requests_2026_01", "req-1"),
        ("requests_2026_02", "req-2"),
        ("requests_2031_07", "req-3"),
    ]
    split = await query(
        pg_url,
        "SELECT tableoid::regclass::text AS part FROM attempts WHERE request_id = 'req-1' "
        "ORDER BY seq",
    )
    assert [r["part"] for r in split] == ["attempts_2026_01", "attempts_2026_02"]
    default = await query(pg_url, "SELECT count(*) AS n FROM requests_default")
    assert default[0]["n"] == 0
    # replayed: again in one batch, and after a restart
    assert await write(pg_url, rows + rows) == 0
    assert [r["request_id"] for r in read_requests(pg_url)] == ["req-0", "req-1", "req-2", "req-3"]
    assert sum(1 for _ in read_attempts(pg_url)) == 8


async def test_a_month_the_default_partition_already_holds_stays_there(pg_url: str) -> None:
    # A row of a month with no partition yet (written by hand, or by another tool) sits in
    # DEFAULT, and PostgreSQL will not carve that month out of it: the ledger's rows of that
    # month go to DEFAULT too, none lost.
    assert await write(pg_url, []) == 0
    march = datetime(2030, 3, 10, tzinfo=UTC).timestamp()
    await query(
        pg_url,
        "INSERT INTO requests (request_id, ts, key, model, api, mode, stream, status, flag, "
        "input_tokens, cache_read_tokens, cache_write_tokens, cache_write_1h_tokens, "
        "output_tokens, reasoning_tokens, usage_source, cost_usd, revenue_usd, latency_ms, "
        "attempts) VALUES ('by-hand', $1, 'app', 'm', 'openai.chat', 'realtime', false, 200, "
        "'OK', 0, 0, 0, 0, 0, 0, 'provider', 0, 0, 1.0, 0)",
        march - 60,
    )
    rows = [full_row(1, march), full_row(2, march)]
    assert await write(pg_url, rows) == 0
    assert await write(pg_url, rows) == 0  # and a replay is still a no-op there
    placed = await query(
        pg_url, "SELECT tableoid::regclass::text AS part, request_id FROM requests ORDER BY ts"
    )
    assert [(r["part"], r["request_id"]) for r in placed] == [
        ("requests_default", "by-hand"),
        ("requests_default", "req-1"),
        ("requests_default", "req-2"),
    ]
    assert sum(1 for _ in read_attempts(pg_url)) == 4


async def test_migrations_rerun_are_noops_and_the_reports_have_indexes(pg_url: str) -> None:
    assert await write(pg_url, [full_row(1)]) == 0
    assert await write(pg_url, []) == 0
    target = parse_url(pg_url)
    conn = await asyncpg.connect(target.dsn, server_settings={"search_path": target.schema})
    try:
        assert await postgres.apply_migrations(conn, target.schema) == []
        versions = [r[0] for r in await conn.fetch("SELECT version FROM schema_migrations")]
        assert versions == [m.version for m in PG_MIGRATIONS]
        indexes = {
            r[0]
            for r in await conn.fetch(
                "SELECT indexname FROM pg_indexes WHERE schemaname = $1 AND tablename = $2",
                target.schema,
                "requests",
            )
        }
        assert {"requests_ts", "requests_key_ts", "requests_model_ts", "requests_task_ts"} <= (
            indexes
        )
        partitioned = await conn.fetch(
            "SELECT c.relname FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 ORDER BY 1",
            target.schema,
        )
        assert [r[0] for r in partitioned] == ["attempts", "requests"]
    finally:
        await conn.close()


async def test_a_newer_schema_refuses_to_start(pg_url: str) -> None:
    assert await write(pg_url, []) == 0
    await query(pg_url, "INSERT INTO schema_migrations VALUES (999, 'from the future', 0)")
    ledger = PostgresLedger(pg_url)
    with pytest.raises(SchemaTooNew, match="999"):
        await ledger.start()


async def test_schemas_keep_tenants_apart(pg_url: str, pg_base: str, tmp_path: Path) -> None:
    other = pg_url.replace("schema=t_", "schema=u_")
    try:
        assert await write(pg_url, [full_row(1)]) == 0
        assert await write(other, [full_row(2), full_row(3)]) == 0
        assert [r["request_id"] for r in read_requests(pg_url)] == ["req-1"]
        assert [r["request_id"] for r in read_requests(other)] == ["req-2", "req-3"]
    finally:
        conn = await asyncpg.connect(pg_base)
        await conn.execute(f'DROP SCHEMA IF EXISTS "{parse_url(other).schema}" CASCADE')
        await conn.close()


async def test_reading_a_ledger_never_written_finds_nothing(pg_url: str) -> None:
    assert list(read_requests(pg_url)) == []
    assert list(read_attempts(pg_url)) == []
    assert await query(pg_url, "SELECT 1 FROM pg_namespace WHERE nspname = current_schema()") == []


def test_exported_members() -> None:
    assert set(postgres.__all__) == {
        "PgTarget",
        "PostgresLedger",
        "apply_migrations",
        "parse_url",
        "read_attempts",
        "read_requests",
        "read_spend",
        "spool_record",
    }
    assert set(spool.__all__) == {"Segment", "Spool"}
    for module in (postgres, spool):
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"


def test_url_forms(tmp_path: Path) -> None:
    t = parse_url("postgresql://me:s3cret@db.internal:6543/ledger?sslmode=disable&schema=acme")
    assert t.schema == "acme"
    assert t.dsn == "postgresql://me:s3cret@db.internal:6543/ledger?sslmode=disable"
    assert t.spool_dir == Path("tokenway-data/spool/db.internal-6543-ledger-acme")
    t = parse_url("postgres://me@localhost/ledger")
    assert (t.schema, t.spool_dir.name) == ("public", "localhost-5432-ledger-public")
    t = parse_url(f"postgresql://me@h/db?spool={tmp_path}")
    assert t.spool_dir == tmp_path / "h-5432-db-public"
    assert parse_url("postgresql://me@h/db?spool=/x", tmp_path).spool_dir.parent == tmp_path
    for bad in ("schema=Acme", "schema=a-b", "schema=x;drop", "schema="):
        with pytest.raises(ValueError, match="schema"):
            parse_url(f"postgresql://me@h/db?{bad}")
    with pytest.raises(ValueError):
        parse_url("postgresql://me@h:99999/db")
    with pytest.raises(ValueError):
        PostgresLedger("sqlite:///x.db")


# ---- the spool -----------------------------------------------------------------------------


async def test_a_spool_left_by_a_crash_is_replayed_exactly_once(pg_url: str) -> None:
    rows = [full_row(i) for i in range(10)]
    # The crash came after rows 0-4 reached the database but before their segment was
    # deleted; rows 5-9 only ever reached the spool, and the last append was torn.
    assert await write(pg_url, rows[:5]) == 0
    left = Spool(parse_url(pg_url).spool_dir)
    left.append([spool_record(r) for r in rows[:5]])
    left.seal()
    left.append([spool_record(r) for r in rows[5:]])
    left.close()
    with left.segments()[-1].open("ab") as f:
        f.write(b'{"r": {"request_id": "req-torn"')

    ledger = PostgresLedger(pg_url)
    await ledger.start()
    await ledger.flush()
    assert ledger.replayed == 10 and not ledger.degraded
    assert [r["request_id"] for r in read_requests(pg_url)] == [f"req-{i}" for i in range(10)]
    await ledger.close()
    assert left.segments() == []

    again = PostgresLedger(pg_url)  # nothing left to replay
    await again.start()
    await again.close()
    assert again.replayed == 0
    assert sum(1 for _ in read_requests(pg_url)) == 10
    assert sum(1 for _ in read_attempts(pg_url)) == 20
    assert ledger.lost == again.lost == 0


async def test_an_unreachable_server_spools_and_start_still_succeeds(tmp_path: Path) -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres?spool={tmp_path}"
    ledger = PostgresLedger(url, retry_initial_s=0.05, connect_timeout_s=1.0)
    await ledger.start()
    assert ledger.degraded
    for i in range(5):
        ledger.record(full_row(i))
    await ledger.flush()  # durable: in the spool
    assert ledger.spooled == 5 and ledger.lost == 0
    await ledger.close()
    (segment,) = Spool(parse_url(url).spool_dir).claim()
    with segment:
        assert [r["r"]["request_id"] for r in segment.read()] == [f"req-{i}" for i in range(5)]


# ---- a private server, stopped and started again --------------------------------------------


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres()
    try:
        server.start()
        yield server
    finally:
        server.remove()


@pytest.fixture
async def lag_probe() -> AsyncIterator[list[float]]:
    """The serving loop's worst scheduling lag while the test runs."""
    worst = [0.0]

    async def probe() -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(0.005)
            worst[0] = max(worst[0], time.monotonic() - before - 0.005)

    task = asyncio.create_task(probe())
    yield worst
    task.cancel()


async def test_rows_recorded_through_an_outage_are_stored_once(
    private_pg: PrivatePostgres, tmp_path: Path, lag_probe: list[float]
) -> None:
    url = f"{private_pg.url}?spool={tmp_path / 'spool'}"
    ledger = PostgresLedger(url, retry_initial_s=0.05, retry_max_s=0.5)
    await ledger.start()
    recorded: list[str] = []
    running = True

    async def traffic() -> None:  # ~200 requests a second, as a gateway would record them
        i = 0
        while running:
            row = full_row(i, time.time())
            ledger.record(row)
            recorded.append(row.request_id)
            i += 1
            await asyncio.sleep(0.005)

    task = asyncio.create_task(traffic())
    await asyncio.sleep(1.0)
    await asyncio.to_thread(private_pg.stop)
    await asyncio.sleep(3.0)
    assert ledger.degraded and ledger.spooled > 0
    await ledger.flush()  # acknowledged while the server is down: the spool has them
    down_at = len(recorded)
    await asyncio.to_thread(private_pg.start)
    await asyncio.sleep(1.0)
    running = False
    await task
    await wait_for(lambda: not ledger.degraded, 30, "the ledger to replay its spool")
    await ledger.close()

    stored = [r["request_id"] for r in read_requests(url)]
    assert len(stored) == len(recorded) == len(set(stored))
    assert set(stored) == set(recorded)
    assert sum(1 for _ in read_attempts(url)) == 2 * len(recorded)
    assert ledger.lost == 0 and ledger.replayed >= ledger.spooled > 0
    assert down_at > 0 and Spool(parse_url(url).spool_dir).segments() == []
    assert lag_probe[0] < 0.25, f"the serving loop stalled {lag_probe[0]:.3f}s"


async def test_a_spool_from_a_down_server_is_replayed_by_the_next_process(
    private_pg: PrivatePostgres, tmp_path: Path
) -> None:
    url = f"{private_pg.url}?spool={tmp_path / 'spool'}"
    await asyncio.to_thread(private_pg.stop)
    first = PostgresLedger(url, connect_timeout_s=1.0)
    await first.start()
    for i in range(20):
        first.record(full_row(i))
    await first.close()  # the server is still down: the rows stay in the spool
    assert first.spooled == 20 and first.degraded
    await asyncio.to_thread(private_pg.start)
    second = PostgresLedger(url)
    await second.start()
    await second.close()
    assert second.replayed == 20 and not second.degraded
    assert [r["request_id"] for r in read_requests(url)] == [f"req-{i}" for i in range(20)]

"""The ledger on PostgreSQL, with a local spool so that no row is lost while the server is down.

The writer is one background thread with its own event loop and one asyncpg connection, so
the serving loop never runs a line of it: `record` only queues the row. The thread takes
batches (up to `batch_size` rows, lingering `linger_s` for them to gather), COPYs each into
temporary staging tables and moves them with `INSERT ... SELECT ... ON CONFLICT DO NOTHING`,
requests and attempts in one transaction. Rows are unique on (request_id, ts), so a row
written twice, replayed from the spool or recorded again after a restart, is stored once.
Before a batch goes in, the monthly partitions it needs are created (`schema.pg_partition_ddl`).

How a batch can end:

    stored ........................ committed; `flush()` returns
    a row PostgreSQL rejects ...... (bad data: class 22, NOT NULL) the batch is retried row by
                                    row and that row alone is dropped, counted in `lost`
    anything else ................. (refused or broken connection, timeout, server shutting
                                    down, too many connections...) the rows go to the spool
                                    (`accounting.spool`, fsync'd) and the ledger is `degraded`

While degraded, every batch goes to the spool and the thread retries the server with
exponential backoff; once connected it replays the spool in order (whole segments, deleted
only once stored), then writes to the server again. `flush()` returns once the rows are
durable in one place or the other. On start, and every `scan_interval_s`, spool segments left
behind (by an earlier run, or a crashed process sharing the directory) are replayed too.

URL: `postgresql://user[:password]@host[:port]/db[?schema=NAME][&spool=DIR]`. `schema` (default
`public`) is created if missing and set as the search path, so tenants and tests can share a
database. The spool lives in `DIR/<host>-<port>-<db>-<schema>/` (default
`tokenway-data/spool/`, or the constructor's `spool_dir`), one directory per database so a
spool is never replayed into the wrong one.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections.abc import Coroutine, Iterable, Iterator
from concurrent.futures import Future
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, NamedTuple, TypeVar
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import asyncpg

from tokenway.accounting.ledger import (
    SPEND_BUCKET_S,
    BackgroundLedger,
    RequestRow,
    decode_row,
    encode_row,
    is_postgres_url,
)
from tokenway.accounting.schema import (
    ATTEMPT_COLUMNS,
    CREATE_MIGRATIONS_TABLE,
    PARTITIONED_TABLES,
    PG_MIGRATIONS,
    REQUEST_COLUMNS,
    month_bounds,
    month_of,
    pg_partition_ddl,
)
from tokenway.accounting.spool import Spool
from tokenway.accounting.sqlite import SchemaTooNew

__all__ = [
    "PgTarget",
    "PostgresLedger",
    "apply_migrations",
    "parse_url",
    "read_attempts",
    "read_requests",
    "read_spend",
    "spool_record",
]

T = TypeVar("T")

log = logging.getLogger("tokenway.accounting.postgres")

DEFAULT_SPOOL = Path("tokenway-data/spool")
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_STAGE = {"requests": "tokenway_stage_requests", "attempts": "tokenway_stage_attempts"}
_COLUMNS = {"requests": REQUEST_COLUMNS, "attempts": ATTEMPT_COLUMNS}
_MONEY = {
    table: tuple(i for i, c in enumerate(columns) if c in ("cost_usd", "revenue_usd"))
    for table, columns in _COLUMNS.items()
}
_PAGE = 2000

Record = dict[str, Any]
"""A row as the spool holds it: {"r": request columns, "a": [attempt columns, ...]}."""


class PgTarget(NamedTuple):
    """A parsed ledger URL: the DSN asyncpg gets, the schema, and this database's spool."""

    dsn: str
    schema: str
    spool_dir: Path


def parse_url(url: str, spool_dir: Path | str | None = None) -> PgTarget:
    """Parse a PostgreSQL ledger URL; a malformed one raises ValueError."""
    if not is_postgres_url(url):
        raise ValueError(f"ledger URL {url!r} is not postgresql://")
    parts = urlsplit(url)
    schema, spool, rest = "public", None, []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name == "schema":
            schema = value
        elif name == "spool":
            spool = value
        else:  # sslmode and the like are asyncpg's
            rest.append((name, value))
    if not _SCHEMA_NAME.fullmatch(schema):
        raise ValueError(f"ledger URL {url!r}: schema must match [a-z_][a-z0-9_]*, not {schema!r}")
    try:
        host, port = parts.hostname or "localhost", parts.port or 5432
    except ValueError as exc:
        raise ValueError(f"ledger URL {url!r}: {exc}") from None
    database = unquote(parts.path.lstrip("/")) or unquote(parts.username or "") or "postgres"
    dsn = urlunsplit(("postgresql", parts.netloc, parts.path, urlencode(rest), ""))
    slug = re.sub(r"[^A-Za-z0-9._@-]", "_", f"{host}-{port}-{database}-{schema}")
    base = Path(spool_dir) if spool_dir is not None else Path(spool or DEFAULT_SPOOL)
    return PgTarget(dsn, schema, base / slug)


# ---- errors: the one place asyncpg's exceptions are sorted -------------------------------


class _Unwritten(Exception):
    """The database failed for a reason other than bad data; `records` were not stored."""

    def __init__(self, records: list[Record]) -> None:
        super().__init__(f"{len(records)} rows not written")
        self.records = records


def _is_bad_row(exc: BaseException) -> bool:
    """Whether `exc` blames the row's data, so that retrying the same row cannot help.

    Client-side encoding errors (a str where a number goes, a malformed spool record) and
    the server's data exceptions (class 22) and NOT NULL violations. Everything else (the
    connection, a timeout, the server shutting down or out of resources, permissions, a
    missing table) might pass, and keeps the row in the spool.
    """
    if isinstance(exc, TypeError | ValueError | ArithmeticError | LookupError):
        return not isinstance(exc, asyncpg.InterfaceError)
    state = getattr(exc, "sqlstate", None) if isinstance(exc, asyncpg.PostgresError) else None
    return isinstance(state, str) and (state.startswith("22") or state == "23502")


# ---- schema ------------------------------------------------------------------------------


async def apply_migrations(conn: Any, schema: str) -> list[int]:
    """Create `schema` if missing and bring it up to date in one transaction; returns the
    versions applied. Serialised across processes by an advisory lock; a no-op when current."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"tokenway:{schema}")
        if not await conn.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1", schema):
            await conn.execute(f'CREATE SCHEMA "{schema}"')
        await conn.execute(CREATE_MIGRATIONS_TABLE)
        done = {int(r[0]) for r in await conn.fetch("SELECT version FROM schema_migrations")}
        latest = PG_MIGRATIONS[-1].version
        if done and max(done) > latest:
            raise SchemaTooNew(
                f"ledger schema version {max(done)} is newer than this tokenway knows ({latest})"
            )
        applied: list[int] = []
        for migration in PG_MIGRATIONS:
            if migration.version in done:
                continue
            for statement in migration.statements:
                await conn.execute(statement)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                migration.version,
                migration.name,
                time.time(),
            )
            applied.append(migration.version)
    return applied


async def _connect(target: PgTarget, connect_s: float, command_s: float | None) -> Any:
    return await asyncpg.connect(
        target.dsn,
        timeout=connect_s,
        command_timeout=command_s,
        server_settings={"search_path": target.schema, "application_name": "tokenway-ledger"},
    )


def spool_record(row: RequestRow) -> Record:
    """`row` as the spool holds it (and the writer COPYs it): JSON-ready, money as strings."""
    request, attempts = encode_row(row)
    return {"r": request, "a": attempts}


def _tuple(table: str, values: dict[str, Any]) -> tuple[Any, ...]:
    out = [values[c] for c in _COLUMNS[table]]
    for i in _MONEY[table]:
        out[i] = Decimal(out[i])
    return tuple(out)


def _months(records: Iterable[Record]) -> set[tuple[int, int]]:
    """The UTC months the rows' timestamps fall in."""
    lo, hi = 0.0, 0.0
    months = set()
    for rec in records:
        for ts in (rec["r"]["ts"], *(a["ts"] for a in rec["a"])):
            try:
                if lo <= ts < hi:  # rows come in time order: nearly all stop here
                    continue
                month = month_of(ts)
            except (TypeError, ValueError, OverflowError, OSError):
                continue  # no partition for a strange ts: it lands in DEFAULT, or is rejected
            months.add(month)
            lo, hi = month_bounds(*month)
    return months


class PostgresLedger(BackgroundLedger):
    """The PostgreSQL ledger: COPY batches from a background thread, spool while unreachable."""

    def __init__(
        self,
        url: str,
        *,
        spool_dir: Path | str | None = None,
        batch_size: int = 1000,
        linger_s: float = 0.02,
        connect_timeout_s: float = 3.0,
        command_timeout_s: float = 15.0,
        retry_initial_s: float = 0.25,
        retry_max_s: float = 5.0,
        scan_interval_s: float = 30.0,
    ) -> None:
        self._target = parse_url(url, spool_dir)
        super().__init__(url, batch_size=batch_size, linger_s=linger_s)
        self.spool = Spool(self._target.spool_dir)
        self._timeouts = (connect_timeout_s, command_timeout_s)
        self._retry = (retry_initial_s, retry_max_s)
        self._delay = retry_initial_s
        self._scan_interval_s = scan_interval_s
        self._due_at = 0.0  # next reconnect (degraded) or spool scan (healthy); 0 = at once
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conn: Any = None
        self._partitions: set[tuple[str, int, int]] = set()
        self.degraded = False
        """True while the database is unreachable and batches go to the spool."""
        self.spooled = 0
        """Rows written to the spool, in all."""
        self.replayed = 0
        """Rows replayed from the spool (those the database already had included)."""

    # ---- writer thread: lifecycle -----------------------------------------------------------

    def _open(self) -> None:
        self._loop = asyncio.new_event_loop()
        try:
            self._run(self._connect())
        except SchemaTooNew:
            self._cleanup()
            raise
        except Exception as exc:  # the gateway starts anyway and spools until it is back
            self._down(exc)
            self._due_at = 0.0

    def _serve(self) -> None:
        while True:
            if time.monotonic() >= self._due_at:
                self._recover()
            batch = self._next_batch(max(0.0, self._due_at - time.monotonic()))
            if batch.rows:
                self._store(batch.rows)
            batch.acknowledge()
            if batch.stop:
                if self.degraded or self.spool.segments():
                    self._recover()  # one last try, so that a short blip leaves no spool
                return

    def _cleanup(self) -> None:
        self.spool.close()
        loop, self._loop = self._loop, None
        if loop is None:
            return
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                loop.run_until_complete(conn.close(timeout=2.0))
            except Exception:
                conn.terminate()
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        assert self._loop is not None
        return self._loop.run_until_complete(coro)

    # ---- writer thread: the paths a batch takes ---------------------------------------------

    def _store(self, rows: list[RequestRow]) -> None:
        records = []
        for row in rows:
            try:
                records.append(spool_record(row))
            except Exception:
                self._lose(1)
                log.exception("ledger: dropping malformed row %s", getattr(row, "request_id", "?"))
        if self.degraded:
            self._spool(records)
            return
        try:
            self._run(self._write(records))
        except _Unwritten as exc:
            self._spool(exc.records)
            self._down(exc.__cause__ or exc)

    def _spool(self, records: list[Record]) -> None:
        try:
            self.spool.append(records)
        except (OSError, ValueError):
            self._lose(len(records))
            log.exception("ledger: database down and spool failed: %d rows lost", len(records))
            return
        self.spooled += len(records)

    def _down(self, exc: BaseException) -> None:
        if not self.degraded:
            log.warning(
                "ledger: PostgreSQL unavailable (%s: %s); spooling to %s",
                type(exc).__name__,
                exc,
                self.spool.directory,
            )
        self.degraded = True
        if self._conn is not None:
            self._conn.terminate()
            self._conn = None
        self._due_at = time.monotonic() + self._delay
        self._delay = min(self._delay * 2, self._retry[1])

    def _recover(self) -> None:
        """Connect if need be and replay every spool segment we can claim, oldest first."""
        replayed = 0
        try:
            if self._conn is None:
                self._run(self._connect())
            for segment in self.spool.claim():
                with segment:
                    records = segment.read()
                    for i in range(0, len(records), self._batch_size):
                        self._run(self._write(records[i : i + self._batch_size]))
                    segment.done()
                replayed += len(records)
                self.replayed += len(records)
        except (_Unwritten, SchemaTooNew) as exc:
            self._down(exc.__cause__ or exc)
            return
        except Exception as exc:  # connecting failed
            self._down(exc)
            return
        if self.degraded:
            log.warning("ledger: PostgreSQL is back; %d spooled rows replayed", replayed)
        elif replayed:
            log.warning("ledger: %d rows left in the spool replayed", replayed)
        self.degraded = False
        self._delay = self._retry[0]
        self._due_at = time.monotonic() + self._scan_interval_s

    # ---- writer thread: SQL -----------------------------------------------------------------

    async def _connect(self) -> None:
        conn = await _connect(self._target, *self._timeouts)
        try:
            await apply_migrations(conn, self._target.schema)
            for table in PARTITIONED_TABLES:
                # ON COMMIT DELETE ROWS: every transaction starts with empty staging tables.
                await conn.execute(
                    f"CREATE TEMP TABLE IF NOT EXISTS {_STAGE[table]} (LIKE {table}) "
                    "ON COMMIT DELETE ROWS"
                )
        except BaseException:
            conn.terminate()
            raise
        self._conn = conn
        self._partitions.clear()
        year, month = month_of(time.time())
        await self._ensure_partitions({(year, month), (year + month // 12, month % 12 + 1)})

    async def _write(self, records: list[Record]) -> None:
        """Store `records`; drop (and count) the ones the database rejects as bad data.
        Raises _Unwritten with the records not stored for any other failure."""
        try:
            await self._copy(records)
            return
        except Exception as exc:
            if not _is_bad_row(exc):
                raise _Unwritten(records) from exc
        for i, record in enumerate(records):  # find the bad rows
            try:
                await self._copy([record])
            except Exception as exc:
                if not _is_bad_row(exc):
                    raise _Unwritten(records[i:]) from exc
                self._lose(1)
                log.error("ledger: dropping request row %s: %s", record["r"].get("request_id"), exc)

    async def _copy(self, records: list[Record]) -> None:
        if not records:
            return
        requests = [_tuple("requests", rec["r"]) for rec in records]
        attempts = [_tuple("attempts", a) for rec in records for a in rec["a"]]
        await self._ensure_partitions(_months(records))
        conn = self._conn
        async with conn.transaction():
            for table, rows in (("requests", requests), ("attempts", attempts)):
                if not rows:
                    continue
                names = _COLUMNS[table]
                await conn.copy_records_to_table(_STAGE[table], records=rows, columns=names)
                listed = ", ".join(names)
                await conn.execute(
                    f"INSERT INTO {table} ({listed}) SELECT {listed} FROM {_STAGE[table]} "
                    "ON CONFLICT DO NOTHING"
                )

    async def _ensure_partitions(self, months: set[tuple[int, int]]) -> None:
        conn = self._conn
        for year, month in sorted(months):
            for table in PARTITIONED_TABLES:
                if (table, year, month) in self._partitions:
                    continue
                name, ddl = pg_partition_ddl(table, year, month)
                try:
                    async with conn.transaction():
                        await conn.execute(
                            "SELECT pg_advisory_xact_lock(hashtext($1))",
                            f"tokenway:{self._target.schema}",
                        )
                        if await conn.fetchval("SELECT to_regclass($1)", name) is None:
                            await conn.execute(ddl)
                except asyncpg.PostgresError as exc:
                    # e.g. DEFAULT already holds rows of that month: they keep landing there
                    if isinstance(exc, asyncpg.PostgresConnectionError) or not exc.sqlstate:
                        raise
                    if exc.sqlstate[:2] in ("08", "53", "57", "58"):
                        raise
                    log.warning("ledger: cannot create partition %s: %s", name, exc)
                self._partitions.add((table, year, month))


# ---- reading -----------------------------------------------------------------------------


class _LoopThread:
    """An event loop on its own thread, so a synchronous caller can drive asyncpg from
    anywhere (a running event loop included)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="tokenway-ledger-read", daemon=True
        )
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


def _read(
    url: str, table: str, where: str, params: tuple[Any, ...], order: str
) -> Iterator[dict[str, Any]]:
    target = parse_url(url)
    columns = _COLUMNS[table]
    runner = _LoopThread()
    try:
        conn = runner.run(_connect(target, 10.0, None))
        try:
            if runner.run(conn.fetchval("SELECT to_regclass($1)", table)) is None:
                return
            # One snapshot for the whole read, fetched a page at a time.
            transaction = conn.transaction(readonly=True, isolation="repeatable_read")
            runner.run(transaction.start())
            sql = f"SELECT {', '.join(columns)} FROM {table}{where} ORDER BY {order}"
            cursor = runner.run(_cursor(conn, sql, params))
            while rows := runner.run(cursor.fetch(_PAGE)):
                for row in rows:
                    yield decode_row(columns, tuple(row))
        finally:
            runner.run(conn.close())
    finally:
        runner.close()


async def _cursor(conn: Any, sql: str, params: tuple[Any, ...]) -> Any:
    return await conn.cursor(sql, *params)


def read_requests(url: str, since: float | None = None) -> Iterator[dict[str, Any]]:
    """Request rows with `ts >= since` (epoch seconds), oldest first; see ledger.read_requests."""
    if since is None:
        return _read(url, "requests", "", (), "ts, request_id")
    return _read(url, "requests", " WHERE ts >= $1", (since,), "ts, request_id")


def read_attempts(
    url: str, request_id: str | None = None, since: float | None = None
) -> Iterator[dict[str, Any]]:
    """Attempt rows (all, or one request's; `ts >= since` epoch seconds when given), by request
    then `seq`; see ledger.read_attempts."""
    clauses: list[str] = []
    params: list[Any] = []
    if request_id is not None:
        params.append(request_id)
        clauses.append(f"request_id = ${len(params)}")
    if since is not None:
        params.append(since)
        clauses.append(f"ts >= ${len(params)}")
    where = " WHERE " + " AND ".join(clauses) if clauses else ""
    return _read(url, "attempts", where, tuple(params), "request_id, seq")


def read_spend(url: str, since: float | None = None) -> Iterator[dict[str, Any]]:
    """Spend per payer and UTC hour since `since` (epoch seconds), summed by the server in
    NUMERIC (exact); see ledger.read_spend."""
    bucket = SPEND_BUCKET_S
    sql = (
        f"SELECT key, team, end_user, floor(ts / {bucket}) * {bucket} AS hour, "
        "SUM(cost_usd) AS cost FROM requests"
        + (" WHERE ts >= $1" if since is not None else "")
        + " GROUP BY 1, 2, 3, 4"
    )
    params: tuple[Any, ...] = (since,) if since is not None else ()
    runner = _LoopThread()
    try:
        conn = runner.run(_connect(parse_url(url), 10.0, None))
        try:
            if runner.run(conn.fetchval("SELECT to_regclass('requests')")) is None:
                return
            for key, team, end_user, hour, cost in runner.run(conn.fetch(sql, *params)):
                yield {
                    "key": key,
                    "team": team,
                    "end_user": end_user,
                    "ts": datetime.fromtimestamp(float(hour), UTC),
                    "cost_usd": Decimal(cost),
                }
        finally:
            runner.run(conn.close())
    finally:
        runner.close()

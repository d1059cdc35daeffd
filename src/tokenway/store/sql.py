"""One SQL interface over SQLite and PostgreSQL for the store's small, transactional tables.

The ledger has its own writers (batched, spooled); what lives here is the rest of what must
survive a restart and be shared by replicas: keys and their audit log, batch jobs, stored
responses. Those are low-volume reads and writes that want transactions and `UPDATE ...
RETURNING` claims, so the interface is plain SQL with named parameters (`:name`), written once
for both engines; the few statements whose DDL differs are given per dialect.

Calls are synchronous and may block (an event loop calls them through `asyncio.to_thread`).
PostgreSQL is driven by asyncpg on a loop thread of its own, so a synchronous caller can use it
from anywhere. A server that cannot be reached raises `StoreUnavailable` (never a hang: connect
and command timeouts apply), and the next call reconnects.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import threading
import time
from collections.abc import Coroutine, Iterator, Mapping, Sequence
from concurrent.futures import Future
from contextlib import contextmanager, suppress
from functools import lru_cache
from typing import Any, Literal, Protocol, TypeVar

import asyncpg

from tokenway.accounting import sqlite as sqlite_db
from tokenway.accounting.ledger import is_postgres_url

__all__ = ["Database", "Migration", "StoreUnavailable", "Tx", "open_database"]

T = TypeVar("T")
Params = Mapping[str, Any] | None

# A migration is one statement, portable, or given per dialect ({"sqlite": ..., "postgres": ...}).
Migration = str | Mapping[str, str]

_MIGRATIONS_TABLE = (
    "CREATE TABLE IF NOT EXISTS store_migrations (component TEXT NOT NULL, "
    "version INTEGER NOT NULL, applied_at DOUBLE PRECISION NOT NULL, "
    "PRIMARY KEY (component, version))"
)


class StoreUnavailable(Exception):
    """The store's server cannot be reached (down, refusing, timed out); retry later."""


class Tx(Protocol):
    """Statements inside one transaction."""

    def execute(self, sql: str, params: Params = None) -> int:
        """Run a statement; returns the number of rows it changed."""
        ...

    def fetch(self, sql: str, params: Params = None) -> list[dict[str, Any]]:
        """Run a query (or a statement with RETURNING); returns its rows."""
        ...


class Database(Protocol):
    """A SQLite file or a PostgreSQL schema, with named-parameter SQL for both."""

    dialect: Literal["sqlite", "postgres"]

    def execute(self, sql: str, params: Params = None) -> int:
        """Run one statement in a transaction of its own; returns the rows it changed."""
        ...

    def fetch(self, sql: str, params: Params = None) -> list[dict[str, Any]]:
        """Run one query; returns its rows as dicts."""
        ...

    def transaction(self) -> Any:
        """A context manager yielding a `Tx`: committed on exit, rolled back on an exception."""
        ...

    def migrate(self, component: str, migrations: Sequence[Migration]) -> list[int]:
        """Apply `component`'s migrations not yet applied (version = position + 1), once,
        even when several processes start together; returns the versions applied."""
        ...

    def close(self) -> None:
        """Release connections (and the loop thread)."""
        ...


def open_database(url: str) -> Database:
    """The store at a ledger URL: `sqlite:///…`/`memory://…` or `postgresql://…[?schema=S]`.
    Connections are made lazily; a malformed URL raises ValueError."""
    if is_postgres_url(url):
        return PostgresDatabase(url)
    return SqliteDatabase(url)


def _statement(migration: Migration, dialect: str) -> str:
    return migration if isinstance(migration, str) else migration[dialect]


# ---- SQLite -------------------------------------------------------------------------------


class _SqliteTx:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Params = None) -> int:
        return self.conn.execute(sql, params or {}).rowcount

    def fetch(self, sql: str, params: Params = None) -> list[dict[str, Any]]:
        cursor = self.conn.execute(sql, params or {})
        names = [d[0] for d in cursor.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


class SqliteDatabase:
    """The store in the ledger's SQLite database: one connection, one writer at a time (SQLite
    serialises writers anyway; across processes `BEGIN IMMEDIATE` and the busy timeout do)."""

    dialect: Literal["sqlite", "postgres"] = "sqlite"

    def __init__(self, url: str) -> None:
        self.target = sqlite_db.parse_url(url)
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.RLock()

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = sqlite_db.connect_writer(self.target)
        return self._conn

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield _SqliteTx(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def execute(self, sql: str, params: Params = None) -> int:
        with self.transaction() as tx:
            return tx.execute(sql, params)

    def fetch(self, sql: str, params: Params = None) -> list[dict[str, Any]]:
        with self._lock:
            return _SqliteTx(self._connection()).fetch(sql, params)

    def migrate(self, component: str, migrations: Sequence[Migration]) -> list[int]:
        with self.transaction() as tx:
            return _migrate(tx, "sqlite", component, migrations)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def _migrate(tx: Tx, dialect: str, component: str, migrations: Sequence[Migration]) -> list[int]:
    tx.execute(_MIGRATIONS_TABLE)
    rows = tx.fetch("SELECT version FROM store_migrations WHERE component = :c", {"c": component})
    done = {int(r["version"]) for r in rows}
    if done and max(done) > len(migrations):
        raise sqlite_db.SchemaTooNew(
            f"store component {component!r} is at version {max(done)}, newer than this "
            f"tokenway knows ({len(migrations)})"
        )
    applied = []
    for version, migration in enumerate(migrations, start=1):
        if version in done:
            continue
        tx.execute(_statement(migration, dialect))
        tx.execute(
            "INSERT INTO store_migrations (component, version, applied_at) VALUES (:c, :v, :t)",
            {"c": component, "v": version, "t": time.time()},
        )
        applied.append(version)
    return applied


# ---- PostgreSQL ---------------------------------------------------------------------------

_NAMED = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")
_CONNECT_S = 5.0
_COMMAND_S = 10.0


@lru_cache(maxsize=512)
def _positional(sql: str) -> tuple[str, tuple[str, ...]]:
    """`:name` placeholders as asyncpg's `$n`, and the names in order (`::type` casts stay)."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}"

    return _NAMED.sub(number, sql), tuple(names)


def _args(sql: str, params: Params) -> tuple[str, list[Any]]:
    text, names = _positional(sql)
    given = params or {}
    missing = [n for n in names if n not in given]
    if missing:
        raise KeyError(f"SQL parameters missing: {', '.join(missing)}")
    return text, [given[n] for n in names]


def _unavailable(exc: BaseException) -> bool:
    if isinstance(exc, OSError | TimeoutError | asyncpg.InterfaceError):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        state = getattr(exc, "sqlstate", "") or ""
        # 08: connection exceptions; 57P: shutdown / cannot connect now; 53: out of resources
        return state.startswith(("08", "57P", "53"))
    return False


def _rowcount(status: str) -> int:
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


class _PgTx:
    def __init__(self, db: PostgresDatabase, conn: Any) -> None:
        self.db = db
        self.conn = conn

    def execute(self, sql: str, params: Params = None) -> int:
        text, args = _args(sql, params)
        return _rowcount(self.db._run(self.conn.execute(text, *args)))

    def fetch(self, sql: str, params: Params = None) -> list[dict[str, Any]]:
        text, args = _args(sql, params)
        return [dict(r) for r in self.db._run(self.conn.fetch(text, *args))]


class PostgresDatabase:
    """The store in a PostgreSQL schema (the ledger URL's `?schema=`, created if missing)."""

    dialect: Literal["sqlite", "postgres"] = "postgres"

    def __init__(self, url: str) -> None:
        from tokenway.accounting.postgres import parse_url  # asyncpg-only import graph

        self.target = parse_url(url)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pool: Any = None
        self._guard = threading.Lock()

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        with self._guard:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(
                    target=self._loop.run_forever, name="tokenway-store", daemon=True
                )
                self._thread.start()
            loop = self._loop
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return future.result()
        except BaseException as exc:
            if _unavailable(exc):
                self._drop_pool()
                raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from None
            raise

    def _drop_pool(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(pool.terminate)

    async def _make_pool(self) -> Any:
        if self._pool is None:
            schema = self.target.schema
            first = await asyncpg.connect(self.target.dsn, timeout=_CONNECT_S)
            try:
                await first.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            except asyncpg.UniqueViolationError:  # created by a concurrent first start
                pass
            finally:
                await first.close()
            self._pool = await asyncpg.create_pool(
                self.target.dsn,
                min_size=0,
                max_size=4,
                timeout=_CONNECT_S,
                command_timeout=_COMMAND_S,
                server_settings={"search_path": schema, "application_name": "tokenway-store"},
            )
        return self._pool

    async def _acquire(self) -> Any:
        pool = await self._make_pool()
        return await pool.acquire(timeout=_CONNECT_S)

    async def _release(self, conn: Any) -> None:
        pool = self._pool
        if pool is not None:
            await pool.release(conn)
        else:
            conn.terminate()

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        conn = self._run(self._acquire())
        try:
            tr = conn.transaction()
            self._run(tr.start())
            try:
                yield _PgTx(self, conn)
            except BaseException:
                if not conn.is_closed():
                    self._run(tr.rollback())
                raise
            self._run(tr.commit())
        finally:
            with suppress(StoreUnavailable):
                self._run(self._release(conn))

    def execute(self, sql: str, params: Params = None) -> int:
        with self.transaction() as tx:
            return tx.execute(sql, params)

    def fetch(self, sql: str, params: Params = None) -> list[dict[str, Any]]:
        text, args = _args(sql, params)
        return [dict(r) for r in self._run(self._fetch(text, args))]

    async def _fetch(self, text: str, args: list[Any]) -> list[Any]:
        pool = await self._make_pool()
        rows: list[Any] = await pool.fetch(text, *args, timeout=_COMMAND_S)
        return rows

    def migrate(self, component: str, migrations: Sequence[Migration]) -> list[int]:
        with self.transaction() as tx:
            # one migrator at a time across every replica (they share store_migrations)
            tx.execute("SELECT pg_advisory_xact_lock(hashtext('tokenway-store'))")
            return _migrate(tx, "postgres", component, migrations)

    def close(self) -> None:
        with self._guard:
            loop, thread, pool = self._loop, self._thread, self._pool
            self._loop = self._thread = self._pool = None
        if loop is None:
            return
        if pool is not None:
            try:
                asyncio.run_coroutine_threadsafe(pool.close(), loop).result(timeout=_CONNECT_S)
            except Exception:  # closing a pool to a dead server: terminate it
                loop.call_soon_threadsafe(pool.terminate)
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join()
        loop.close()

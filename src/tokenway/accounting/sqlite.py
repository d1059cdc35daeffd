"""SQLite plumbing for the ledger: URL parsing, connections and migrations.

URLs: `sqlite:///relative/path.db`, `sqlite:////abs/path.db`, `memory://` (a private in-memory
database) and `memory://NAME` (an in-memory database shared by every connection of this process
that names it; it lives while one of them is open).
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from pathlib import Path
from urllib.parse import quote

from tokenway.accounting.schema import CREATE_MIGRATIONS_TABLE, MIGRATIONS

__all__ = [
    "SchemaTooNew",
    "SqliteTarget",
    "apply_migrations",
    "connect_reader",
    "connect_writer",
    "parse_url",
]

BUSY_TIMEOUT_MS = 5000


class SchemaTooNew(RuntimeError):
    """The database was migrated by a newer tokenway than this one."""


class SqliteTarget:
    """Where a ledger lives: a file path, or the URI of a shared in-memory database."""

    def __init__(self, url: str, path: Path | None, memory_uri: str | None) -> None:
        self.url = url
        self.path = path
        self.memory_uri = memory_uri

    def __repr__(self) -> str:
        return f"SqliteTarget({self.url!r})"


def parse_url(url: str) -> SqliteTarget:
    """Parse a SQLite ledger URL; anything else (PostgreSQL included) raises ValueError."""
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep:
        raise ValueError(f"ledger URL {url!r} has no scheme (sqlite:///path.db or memory://)")
    if scheme in ("postgres", "postgresql"):
        raise ValueError(
            f"ledger URL {url!r} is PostgreSQL: open it with open_ledger, not the SQLite backend"
        )
    if scheme == "memory":
        name = rest or f"private-{uuid.uuid4().hex}"
        canonical = f"memory://{name}"
        return SqliteTarget(
            canonical, None, f"file:tokenway-{quote(name)}?mode=memory&cache=shared"
        )
    if scheme == "sqlite":
        if not rest.startswith("/") or rest == "/":
            raise ValueError(
                f"ledger URL {url!r}: expected sqlite:///relative.db or sqlite:////abs.db"
            )
        # sqlite:///x -> "x" (relative); sqlite:////x -> "/x" (absolute)
        return SqliteTarget(url, Path(rest[1:]), None)
    raise ValueError(f"ledger URL {url!r}: unsupported scheme {scheme!r}")


def _wal(conn: sqlite3.Connection) -> None:
    # Switching a new file to WAL needs an exclusive lock, and SQLite answers "locked" at once,
    # without its busy handler, while another process opening the same file holds one.
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


def connect_writer(target: SqliteTarget) -> sqlite3.Connection:
    """A connection for the writer thread, in autocommit mode (transactions are explicit)."""
    if target.path is not None:
        target.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            target.path,
            isolation_level=None,
            check_same_thread=False,
            timeout=BUSY_TIMEOUT_MS / 1000,
        )
        _wal(conn)
        # NORMAL in WAL mode survives a process crash; only power loss may lose the last commits.
        conn.execute("PRAGMA synchronous=NORMAL")
    else:
        assert target.memory_uri is not None
        conn = sqlite3.connect(
            target.memory_uri, uri=True, isolation_level=None, check_same_thread=False
        )
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    return conn


def connect_reader(target: SqliteTarget) -> sqlite3.Connection:
    """A read-only connection (a shared one for memory databases, which cannot be opened ro)."""
    if target.path is not None:
        if not target.path.exists():
            raise FileNotFoundError(f"ledger database not found: {target.path}")
        uri = f"file:{quote(str(target.path.resolve()))}?mode=ro"
        conn = sqlite3.connect(uri, uri=True, isolation_level=None)
    else:
        assert target.memory_uri is not None
        conn = sqlite3.connect(target.memory_uri, uri=True, isolation_level=None)
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    return conn


def has_table(conn: sqlite3.Connection, name: str) -> bool:
    found = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
    ).fetchone()
    return found is not None


def apply_migrations(conn: sqlite3.Connection) -> list[int]:
    """Bring the schema up to date in one transaction; returns the versions applied.

    Safe to run concurrently from several processes (the first takes the write lock, the
    others then find nothing to do) and a no-op on an up-to-date database.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(CREATE_MIGRATIONS_TABLE)
        done = {int(v) for (v,) in conn.execute("SELECT version FROM schema_migrations")}
        latest = MIGRATIONS[-1].version
        if done and max(done) > latest:
            raise SchemaTooNew(
                f"ledger schema version {max(done)} is newer than this tokenway knows ({latest})"
            )
        applied: list[int] = []
        for migration in MIGRATIONS:
            if migration.version in done:
                continue
            for statement in migration.statements:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.name, time.time()),
            )
            applied.append(migration.version)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return applied

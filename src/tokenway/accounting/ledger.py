"""The ledger: one row per client request and one per upstream attempt, kept off the hot path.

`record()` only puts the row on a queue. A background thread drains the queue in batches and
writes each batch in one transaction (`ON CONFLICT DO NOTHING`, so a replayed row never counts
twice). `flush()` waits until everything recorded before it is durable; `close()` flushes and
stops the thread. `BackgroundLedger` holds that machinery; the backends are `SqliteLedger`
(here) and `PostgresLedger` (`accounting.postgres`, which spools to local files while the
server is unreachable). `open_ledger`, `read_requests` and `read_attempts` pick the backend
from the URL's scheme.

If SQLite keeps failing (disk full, locked for longer than the busy timeout across several
retries), the batch is given up, logged and counted in `lost`; the writer itself never dies
and the request path never notices.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import queue
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, NamedTuple, Protocol

import msgspec

from tokenway.accounting import sqlite as db
from tokenway.accounting.schema import (
    ATTEMPT_COLUMNS,
    INSERT_ATTEMPT,
    INSERT_REQUEST,
    REQUEST_COLUMNS,
)
from tokenway.domain.types import Usage

__all__ = [
    "AttemptRow",
    "BackgroundLedger",
    "Ledger",
    "RequestRow",
    "SqliteLedger",
    "open_ledger",
    "read_attempts",
    "read_requests",
]

log = logging.getLogger("tokenway.accounting.ledger")


class AttemptRow(msgspec.Struct, kw_only=True):
    """One upstream attempt: which target, how it ended, what it used and cost."""

    request_id: str
    seq: int
    ts: float
    provider: str
    provider_model: str
    status: int
    flag: str
    usage: Usage
    cost_usd: Decimal
    latency_ms: float
    ttft_ms: float | None = None
    error: str | None = None


class RequestRow(msgspec.Struct, kw_only=True):
    """One client request. `key` is the key's name (never the secret); `ts` is the request's
    start in epoch seconds; `cost_usd` is the sum over attempts and `revenue_usd` what the
    client is charged; `status` is the HTTP status the client got."""

    request_id: str
    ts: float
    key: str
    team: str | None = None
    model: str
    provider: str | None = None
    provider_model: str | None = None
    api: str
    mode: str = "realtime"
    stream: bool = False
    status: int
    flag: str
    usage: Usage
    cost_usd: Decimal
    revenue_usd: Decimal
    ttft_ms: float | None = None
    latency_ms: float
    attempts: list[AttemptRow] = msgspec.field(default_factory=list)
    end_user: str | None = None
    """The end user the client named (OpenAI `user`, Anthropic `metadata.user_id`)."""
    tags: dict[str, str] | None = None
    """Attribution tags from `x-tokenway-tags` and the request's `metadata`."""
    task: str | None = None
    """The task class (`x-tokenway-task`, else the `task` tag)."""


class Ledger(Protocol):
    """Where request rows go. `record` never blocks and never raises."""

    def record(self, row: RequestRow) -> None: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def flush(self) -> None: ...


def is_postgres_url(url: str) -> bool:
    """Whether `url` names a PostgreSQL ledger (postgresql:// or postgres://)."""
    return url.partition("://")[0].lower() in ("postgres", "postgresql")


def open_ledger(url: str) -> BackgroundLedger:
    """A ledger for `url`, not started: sqlite:///rel.db, sqlite:////abs.db, memory://[NAME]
    or postgresql://user@host:port/db[?schema=NAME]. An unknown scheme raises ValueError."""
    if is_postgres_url(url):
        from tokenway.accounting.postgres import PostgresLedger

        return PostgresLedger(url)
    return SqliteLedger(url)


class _Flush:
    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done: concurrent.futures.Future[None] = concurrent.futures.Future()


class _Stop:
    pass


_Item = RequestRow | _Flush | _Stop


class Batch(NamedTuple):
    """What the writer thread took off the queue in one go."""

    rows: list[RequestRow]
    flushes: list[_Flush]
    stop: bool

    def acknowledge(self) -> None:
        """Release every `flush()` waiting on this batch (call once its rows are durable)."""
        for marker in self.flushes:
            marker.done.set_result(None)


class BackgroundLedger(ABC):
    """The queue, writer thread and lifecycle every ledger backend shares.

    A backend implements `_open` (in the writer thread; raising fails `start`), `_serve` (the
    thread's loop: take batches with `_next_batch`, store them, acknowledge, return on stop)
    and `_cleanup` (after `_serve`, also in the thread).
    """

    def __init__(self, url: str, *, batch_size: int, linger_s: float) -> None:
        self.url = url
        """The URL `read_requests` and `read_attempts` take to read this ledger back."""
        self._batch_size = batch_size
        self._linger_s = linger_s
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._start_lock = asyncio.Lock()
        self._lost_lock = threading.Lock()
        self.lost = 0
        """Rows given up: rejected by the database as bad data, lost to repeated write errors
        (SQLite) or to a failed spool (PostgreSQL), or recorded after close."""

    def record(self, row: RequestRow) -> None:
        """Queue `row` for the writer; never blocks, never raises."""
        try:
            if self._closed:
                self._lose(1)
                log.error("ledger closed: request %s not recorded", row.request_id)
                return
            self._queue.put(row)
        except Exception:  # the hot path must not fail because of accounting
            log.exception("ledger: could not queue a row")

    async def start(self) -> None:
        """Open the database, run migrations and start the writer thread (idempotent)."""
        async with self._start_lock:
            if self._thread is not None:
                return
            ready: concurrent.futures.Future[None] = concurrent.futures.Future()
            thread = threading.Thread(
                target=self._main, args=(ready,), name="tokenway-ledger", daemon=True
            )
            thread.start()
            try:
                await asyncio.wrap_future(ready)
            except BaseException:
                await asyncio.to_thread(thread.join)
                raise
            self._thread = thread

    async def flush(self) -> None:
        """Wait until every row recorded so far is durable."""
        if self._thread is None:
            await self.start()
        marker = _Flush()
        self._queue.put(marker)
        await asyncio.wrap_future(marker.done)

    async def close(self) -> None:
        """Flush everything, then stop the writer. Later `record` calls are counted as lost."""
        if self._closed:
            return
        if self._thread is None and self._queue.empty():
            self._closed = True
            return
        await self.flush()
        self._closed = True
        thread = self._thread
        assert thread is not None
        self._queue.put(_Stop())
        await asyncio.to_thread(thread.join)

    def _main(self, ready: concurrent.futures.Future[None]) -> None:
        try:
            self._open()
        except BaseException as exc:
            ready.set_exception(exc)
            return
        ready.set_result(None)
        try:
            self._serve()
        finally:
            self._cleanup()

    def _next_batch(self, timeout: float | None = None) -> Batch:
        """Up to `batch_size` items; waits at most `timeout` seconds for the first one."""
        try:
            items = [self._queue.get(timeout=timeout)]
        except queue.Empty:
            return Batch([], [], False)
        if (
            isinstance(items[0], RequestRow)
            and self._linger_s
            and self._queue.qsize() < self._batch_size
        ):
            # Let a batch gather: one transaction per few dozen rows costs the serving
            # thread far less GIL time than one per row. (A full queue need not wait.)
            time.sleep(self._linger_s)
        while len(items) < self._batch_size:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return Batch(
            [i for i in items if isinstance(i, RequestRow)],
            [i for i in items if isinstance(i, _Flush)],
            any(isinstance(i, _Stop) for i in items),
        )

    def _lose(self, n: int) -> None:
        with self._lost_lock:
            self.lost += n

    @abstractmethod
    def _open(self) -> None: ...

    @abstractmethod
    def _serve(self) -> None: ...

    @abstractmethod
    def _cleanup(self) -> None: ...


class SqliteLedger(BackgroundLedger):
    """The embedded ledger: SQLite in WAL mode, written by one background thread."""

    def __init__(
        self, url: str, *, batch_size: int = 512, retries: int = 5, linger_s: float = 0.02
    ) -> None:
        self._target = db.parse_url(url)
        super().__init__(self._target.url, batch_size=batch_size, linger_s=linger_s)
        self._retries = retries
        self._conn: sqlite3.Connection | None = None

    # ---- writer thread ------------------------------------------------------------------

    def _open(self) -> None:
        conn = db.connect_writer(self._target)
        try:
            db.apply_migrations(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _serve(self) -> None:
        assert self._conn is not None
        while True:
            batch = self._next_batch()
            if batch.rows:
                self._write(self._conn, batch.rows)
            batch.acknowledge()
            if batch.stop:
                return

    def _cleanup(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _write(self, conn: sqlite3.Connection, rows: list[RequestRow]) -> None:
        requests: list[dict[str, Any]] = []
        attempts: list[dict[str, Any]] = []
        for row in rows:
            try:
                request_params, attempt_params = encode_row(row)
            except Exception:
                self._lose(1)
                log.exception("ledger: dropping malformed row %s", getattr(row, "request_id", "?"))
                continue
            requests.append(request_params)
            attempts.extend(attempt_params)
        delay = 0.05
        for attempt in range(self._retries):
            try:
                self._commit(conn, requests, attempts)
                return
            except sqlite3.OperationalError as exc:  # busy, locked, disk I/O: may pass
                log.warning("ledger write failed (try %d): %s", attempt + 1, exc)
                time.sleep(delay)
                delay = min(delay * 4, 2.0)
            except sqlite3.Error:  # a bad row: write one by one so it alone is dropped
                self._write_each(conn, requests, attempts)
                return
        self._lose(len(requests))
        log.error("ledger: gave up writing %d request rows", len(requests))

    def _write_each(
        self,
        conn: sqlite3.Connection,
        requests: list[dict[str, Any]],
        attempts: list[dict[str, Any]],
    ) -> None:
        by_request: dict[str, list[dict[str, Any]]] = {}
        for a in attempts:
            by_request.setdefault(a["request_id"], []).append(a)
        for request in requests:
            try:
                self._commit(conn, [request], by_request.get(request["request_id"], []))
            except sqlite3.Error as exc:
                self._lose(1)
                log.error("ledger: dropping request row %s: %s", request["request_id"], exc)

    @staticmethod
    def _commit(
        conn: sqlite3.Connection, requests: list[dict[str, Any]], attempts: list[dict[str, Any]]
    ) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(INSERT_REQUEST, requests)
            conn.executemany(INSERT_ATTEMPT, attempts)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise


_TAGS = msgspec.json.Encoder(order="sorted")  # the same tags, the same text


def _money(value: Decimal) -> str:
    return format(value, "f")


def _text(value: str | None) -> str | None:
    # PostgreSQL text and jsonb cannot hold U+0000, and a row the database refuses would go
    # unbilled: client-given text (end user, tags, upstream error messages) keeps its place
    # with U+FFFD, on every backend alike.
    return value.replace("\x00", "\ufffd") if value and "\x00" in value else value


def _tags(tags: dict[str, str] | None) -> str | None:
    if not tags:
        return None
    clean = {_text(k) or "": _text(v) or "" for k, v in tags.items()}
    return _TAGS.encode(clean).decode()


def _usage_params(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.input_tokens,
        "cache_read_tokens": usage.cache_read_tokens,
        "cache_write_tokens": usage.cache_write_tokens,
        "cache_write_1h_tokens": usage.cache_write_1h_tokens,
        "output_tokens": usage.output_tokens,
        "reasoning_tokens": usage.reasoning_tokens,
        "service_tier": usage.service_tier,
        "usage_source": usage.source,
    }


def _request_params(row: RequestRow) -> dict[str, Any]:
    return {
        "request_id": row.request_id,
        "ts": float(row.ts),
        "key": row.key,
        "team": row.team,
        "model": row.model,
        "provider": row.provider,
        "provider_model": row.provider_model,
        "api": row.api,
        "mode": row.mode,
        "stream": bool(row.stream),
        "status": int(row.status),
        "flag": row.flag,
        **_usage_params(row.usage),
        "cost_usd": _money(row.cost_usd),
        "revenue_usd": _money(row.revenue_usd),
        "ttft_ms": row.ttft_ms,
        "latency_ms": float(row.latency_ms),
        "attempts": len(row.attempts),
        "end_user": _text(row.end_user),
        "task": _text(row.task),
        "tags": _tags(row.tags),
    }


def _attempt_params(row: AttemptRow) -> dict[str, Any]:
    return {
        "request_id": row.request_id,
        "seq": int(row.seq),
        "ts": float(row.ts),
        "provider": row.provider,
        "provider_model": row.provider_model,
        "status": int(row.status),
        "flag": row.flag,
        **_usage_params(row.usage),
        "cost_usd": _money(row.cost_usd),
        "latency_ms": float(row.latency_ms),
        "ttft_ms": row.ttft_ms,
        "error": _text(row.error),
    }


def encode_row(row: RequestRow) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The request's column values and its attempts', keyed by column name.

    JSON-ready: money is an exact decimal string, `tags` a JSON string, `ts` a float.
    """
    return _request_params(row), [_attempt_params(a) for a in row.attempts]


# ---- reading ----------------------------------------------------------------------------


def _epoch(moment: datetime) -> float:
    return (moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment).timestamp()


def decode_row(columns: tuple[str, ...], values: tuple[Any, ...]) -> dict[str, Any]:
    """A stored row as `read_requests` yields it: money as Decimal, `stream` bool, tags dict."""
    out = dict(zip(columns, values, strict=True))
    for money in ("cost_usd", "revenue_usd"):
        if money in out:
            out[money] = Decimal(out[money])
    if "stream" in out:
        out["stream"] = bool(out["stream"])
    if out.get("tags"):
        out["tags"] = json.loads(out["tags"])
    return out


def _select(
    url: str, table: str, columns: tuple[str, ...], where: str, params: tuple[Any, ...]
) -> Iterator[dict[str, Any]]:
    conn = db.connect_reader(db.parse_url(url))
    try:
        if not db.has_table(conn, table):
            return
        sql = f"SELECT {', '.join(columns)} FROM {table}{where}"
        for values in conn.execute(sql, params):
            yield decode_row(columns, values)
    finally:
        conn.close()


def read_requests(url: str, since: datetime | None = None) -> Iterator[dict[str, Any]]:
    """Request rows with `ts >= since`, oldest first, as dicts keyed by column name.

    Money comes back as Decimal, `stream` as bool, `attempts` as the attempt count. A naive
    `since` is taken as UTC. Raises FileNotFoundError for a missing SQLite database file; a
    PostgreSQL ledger with no tables yet has no rows.
    """
    if is_postgres_url(url):
        from tokenway.accounting import postgres

        return postgres.read_requests(url, _epoch(since) if since is not None else None)
    where = " WHERE ts >= ?" if since is not None else ""
    params: tuple[Any, ...] = (_epoch(since),) if since is not None else ()
    return _select(url, "requests", REQUEST_COLUMNS, where + " ORDER BY ts, request_id", params)


SPEND_BUCKET_S = 3600
"""Spend is summed per UTC hour: budget periods (day, month) start on an hour boundary."""


def read_spend(url: str, since: datetime | None = None) -> Iterator[dict[str, Any]]:
    """Spend since `since` per payer (`key`, `team`, `end_user`) and UTC hour, exactly (Decimal
    `cost_usd`; `ts` the hour's start as an aware datetime): what budgets are seeded from at
    start, one row per payer-hour rather than one per request. A missing SQLite file raises
    FileNotFoundError, as `read_requests` does."""
    if is_postgres_url(url):
        from tokenway.accounting import postgres

        return postgres.read_spend(url, _epoch(since) if since is not None else None)
    return _sum_spend(url, since)


def _sum_spend(url: str, since: datetime | None) -> Iterator[dict[str, Any]]:
    where = " WHERE ts >= ?" if since is not None else ""
    params: tuple[Any, ...] = (_epoch(since),) if since is not None else ()
    columns = ("key", "team", "end_user", "ts", "cost_usd")
    sums: dict[tuple[Any, Any, Any, int], Decimal] = {}
    for row in _select(url, "requests", columns, where, params):
        hour = int(row["ts"] // SPEND_BUCKET_S) * SPEND_BUCKET_S
        bucket = (row["key"], row["team"], row["end_user"], hour)
        sums[bucket] = sums.get(bucket, Decimal(0)) + row["cost_usd"]
    for (key, team, end_user, hour), cost in sums.items():
        ts = datetime.fromtimestamp(hour, UTC)
        yield {"key": key, "team": team, "end_user": end_user, "ts": ts, "cost_usd": cost}


def read_attempts(
    url: str, request_id: str | None = None, *, since: datetime | None = None
) -> Iterator[dict[str, Any]]:
    """Attempt rows (all, or those of one request; with `ts >= since` when given: an attempt
    never starts before its request), ordered by request then `seq`."""
    start = _epoch(since) if since is not None else None
    if is_postgres_url(url):
        from tokenway.accounting import postgres

        return postgres.read_attempts(url, request_id, start)
    clauses: list[str] = []
    params: list[Any] = []
    if request_id is not None:
        clauses.append("request_id = ?")
        params.append(request_id)
    if start is not None:
        clauses.append("ts >= ?")
        params.append(start)
    where = " WHERE " + " AND ".join(clauses) if clauses else ""
    order = " ORDER BY request_id, seq"
    return _select(url, "attempts", ATTEMPT_COLUMNS, where + order, tuple(params))

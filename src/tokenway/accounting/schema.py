"""Ledger schema and its migrations, for SQLite (`MIGRATIONS`) and PostgreSQL (`PG_MIGRATIONS`).

Both hold the same columns (`REQUEST_COLUMNS`, `ATTEMPT_COLUMNS`) under the same names, with
`IF NOT EXISTS` everywhere and `ON CONFLICT DO NOTHING` for idempotent inserts. Tokens are
integers and `ts` is epoch seconds (DOUBLE PRECISION, so a row reads back with the very float
it was written with). SQLite keeps money as TEXT holding an exact decimal string; PostgreSQL
as unconstrained NUMERIC (exact at any scale) and `tags` as JSONB.

PostgreSQL tables are partitioned by RANGE on `ts`: one partition per UTC month, created by
the writer before it inserts into a month that lacks one (`pg_partition_ddl`), plus a DEFAULT
partition as a safety net. A partitioned table's primary key must include `ts`, so rows are
unique on (request_id, ts) and (request_id, seq, ts); a replayed row carries the same `ts` and
is a no-op.

Each list keeps its own version numbers in its own `schema_migrations` table. Migrations are
append-only: never edit one that has shipped, add the next version instead (to both lists
when a column is added).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import NamedTuple

__all__ = [
    "ATTEMPT_COLUMNS",
    "INSERT_ATTEMPT",
    "INSERT_REQUEST",
    "MIGRATIONS",
    "PARTITIONED_TABLES",
    "PG_MIGRATIONS",
    "REQUEST_COLUMNS",
    "Migration",
    "month_bounds",
    "month_of",
    "pg_partition_ddl",
]


class Migration(NamedTuple):
    version: int
    name: str
    statements: tuple[str, ...]


USAGE_COLUMNS_SQL = """
    input_tokens BIGINT NOT NULL,
    cache_read_tokens BIGINT NOT NULL,
    cache_write_tokens BIGINT NOT NULL,
    cache_write_1h_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    reasoning_tokens BIGINT NOT NULL,
    service_tier TEXT,
    usage_source TEXT NOT NULL,"""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "requests and attempts",
        (
            f"""CREATE TABLE IF NOT EXISTS requests (
    request_id TEXT PRIMARY KEY,
    ts DOUBLE PRECISION NOT NULL,
    key TEXT NOT NULL,
    team TEXT,
    model TEXT NOT NULL,
    provider TEXT,
    provider_model TEXT,
    api TEXT NOT NULL,
    mode TEXT NOT NULL,
    stream BOOLEAN NOT NULL,
    status INTEGER NOT NULL,
    flag TEXT NOT NULL,{USAGE_COLUMNS_SQL}
    cost_usd TEXT NOT NULL,
    revenue_usd TEXT NOT NULL,
    ttft_ms DOUBLE PRECISION,
    latency_ms DOUBLE PRECISION NOT NULL,
    attempts INTEGER NOT NULL
)""",
            f"""CREATE TABLE IF NOT EXISTS attempts (
    request_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    ts DOUBLE PRECISION NOT NULL,
    provider TEXT NOT NULL,
    provider_model TEXT NOT NULL,
    status INTEGER NOT NULL,
    flag TEXT NOT NULL,{USAGE_COLUMNS_SQL}
    cost_usd TEXT NOT NULL,
    latency_ms DOUBLE PRECISION NOT NULL,
    ttft_ms DOUBLE PRECISION,
    error TEXT,
    PRIMARY KEY (request_id, seq)
)""",
            "CREATE INDEX IF NOT EXISTS requests_ts ON requests (ts)",
            "CREATE INDEX IF NOT EXISTS requests_key_ts ON requests (key, ts)",
            "CREATE INDEX IF NOT EXISTS requests_model_ts ON requests (model, ts)",
            "CREATE INDEX IF NOT EXISTS attempts_ts ON attempts (ts)",
        ),
    ),
    Migration(
        2,
        "attribution: end user and tags",
        (
            "ALTER TABLE requests ADD COLUMN end_user TEXT",
            "ALTER TABLE requests ADD COLUMN tags TEXT",
        ),
    ),
    Migration(
        3,
        "task class",
        (
            "ALTER TABLE requests ADD COLUMN task TEXT",
            "CREATE INDEX IF NOT EXISTS requests_task_ts ON requests (task, ts)",
        ),
    ),
)

CREATE_MIGRATIONS_TABLE = """CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at DOUBLE PRECISION NOT NULL
)"""

_USAGE = (
    "input_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cache_write_1h_tokens",
    "output_tokens",
    "reasoning_tokens",
    "service_tier",
    "usage_source",
)

REQUEST_COLUMNS: tuple[str, ...] = (
    "request_id",
    "ts",
    "key",
    "team",
    "model",
    "provider",
    "provider_model",
    "api",
    "mode",
    "stream",
    "status",
    "flag",
    *_USAGE,
    "cost_usd",
    "revenue_usd",
    "ttft_ms",
    "latency_ms",
    "attempts",
    "end_user",
    "tags",
    "task",
)

ATTEMPT_COLUMNS: tuple[str, ...] = (
    "request_id",
    "seq",
    "ts",
    "provider",
    "provider_model",
    "status",
    "flag",
    *_USAGE,
    "cost_usd",
    "latency_ms",
    "ttft_ms",
    "error",
)


def _insert(table: str, columns: tuple[str, ...]) -> str:
    names = ", ".join(columns)
    values = ", ".join(f":{c}" for c in columns)
    return f"INSERT INTO {table} ({names}) VALUES ({values}) ON CONFLICT DO NOTHING"


INSERT_REQUEST = _insert("requests", REQUEST_COLUMNS)
INSERT_ATTEMPT = _insert("attempts", ATTEMPT_COLUMNS)


# ---- PostgreSQL -------------------------------------------------------------------------

PG_MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "requests and attempts, partitioned by month",
        (
            f"""CREATE TABLE IF NOT EXISTS requests (
    request_id TEXT NOT NULL,
    ts DOUBLE PRECISION NOT NULL,
    key TEXT NOT NULL,
    team TEXT,
    model TEXT NOT NULL,
    provider TEXT,
    provider_model TEXT,
    api TEXT NOT NULL,
    mode TEXT NOT NULL,
    stream BOOLEAN NOT NULL,
    status INTEGER NOT NULL,
    flag TEXT NOT NULL,{USAGE_COLUMNS_SQL}
    cost_usd NUMERIC NOT NULL,
    revenue_usd NUMERIC NOT NULL,
    ttft_ms DOUBLE PRECISION,
    latency_ms DOUBLE PRECISION NOT NULL,
    attempts INTEGER NOT NULL,
    end_user TEXT,
    tags JSONB,
    task TEXT,
    PRIMARY KEY (request_id, ts)
) PARTITION BY RANGE (ts)""",
            "CREATE TABLE IF NOT EXISTS requests_default PARTITION OF requests DEFAULT",
            f"""CREATE TABLE IF NOT EXISTS attempts (
    request_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    ts DOUBLE PRECISION NOT NULL,
    provider TEXT NOT NULL,
    provider_model TEXT NOT NULL,
    status INTEGER NOT NULL,
    flag TEXT NOT NULL,{USAGE_COLUMNS_SQL}
    cost_usd NUMERIC NOT NULL,
    latency_ms DOUBLE PRECISION NOT NULL,
    ttft_ms DOUBLE PRECISION,
    error TEXT,
    PRIMARY KEY (request_id, seq, ts)
) PARTITION BY RANGE (ts)""",
            "CREATE TABLE IF NOT EXISTS attempts_default PARTITION OF attempts DEFAULT",
            # The reports: spend over time, per key, per model, per task class.
            "CREATE INDEX IF NOT EXISTS requests_ts ON requests (ts)",
            "CREATE INDEX IF NOT EXISTS requests_key_ts ON requests (key, ts)",
            "CREATE INDEX IF NOT EXISTS requests_model_ts ON requests (model, ts)",
            "CREATE INDEX IF NOT EXISTS requests_task_ts ON requests (task, ts)",
            "CREATE INDEX IF NOT EXISTS attempts_ts ON attempts (ts)",
        ),
    ),
)

PARTITIONED_TABLES: tuple[str, ...] = ("requests", "attempts")


def month_of(ts: float) -> tuple[int, int]:
    """The UTC (year, month) holding epoch second `ts`."""
    moment = datetime.fromtimestamp(ts, UTC)
    return moment.year, moment.month


def month_bounds(year: int, month: int) -> tuple[float, float]:
    """The month's first epoch second and the next month's."""
    start = datetime(year, month, 1, tzinfo=UTC).timestamp()
    nxt = (year + 1, 1) if month == 12 else (year, month + 1)
    return start, datetime(nxt[0], nxt[1], 1, tzinfo=UTC).timestamp()


def pg_partition_ddl(table: str, year: int, month: int) -> tuple[str, str]:
    """The partition's name and the statement that creates it (if missing) for one month."""
    start, end = month_bounds(year, month)
    name = f"{table}_{year:04d}_{month:02d}"
    return name, (
        f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF {table} "
        f"FOR VALUES FROM ({start!r}) TO ({end!r})"
    )

"""Ledger schema and its migrations.

The SQL is written to run unchanged on SQLite and PostgreSQL: portable type names (`BIGINT`,
`DOUBLE PRECISION`, `BOOLEAN`, `TEXT`), `IF NOT EXISTS` everywhere and `ON CONFLICT DO NOTHING`
for idempotent inserts. Money is TEXT holding an exact decimal string; tokens are integers;
`ts` is epoch seconds. Placeholders are named (`:request_id`); a PostgreSQL driver translates
them to its own style.

Migrations are append-only: never edit one that has shipped, add the next version instead.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = [
    "ATTEMPT_COLUMNS",
    "INSERT_ATTEMPT",
    "INSERT_REQUEST",
    "MIGRATIONS",
    "REQUEST_COLUMNS",
    "Migration",
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

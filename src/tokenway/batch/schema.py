"""The job store's tables (store component `batch`), the same on SQLite and PostgreSQL.

    batch_files   uploaded input files and the output/error files batches produce; the
                  content lives in the row (BLOB / BYTEA), so every replica can read it
    batches       one row per batch: the OpenAI object's fields, the key that owns it (and a
                  snapshot of what that key may do), request counts, and the lease of the
                  replica validating or finalizing it
    batch_lines   one row per request line: its body, its lease while a replica runs it, how
                  many times it was sent without a recorded result (and the prompt estimate and
                  target of the last send), its result, and its ledger row (an outbox: kept
                  until the ledger has it)
    async_tasks   what an async task adds to its `batches` row (`kind = 'async'`, one line):
                  the routing headers it replays, its result once it ended (its line is
                  purged later), and its webhook delivery (an outbox: state, attempts, when
                  the next is due, and the lease of the replica delivering it)
    async_task_keys
                  the `Idempotency-Key`s tasks were submitted with: one row per (key name,
                  idempotency key), its primary key what makes a duplicate submission on any
                  replica find the first one's task rather than make a second; a row lives as
                  long as its task

A batch handed to its provider's Batch API keeps the upstream file and batch ids on its
`batches` row (`upstream_*`), so that the replica that takes over after a restart resumes it.

Times of the OpenAI objects are whole epoch seconds (BIGINT); leases and send times are
fractional epoch seconds (DOUBLE PRECISION). Migrations are append-only.
"""

from __future__ import annotations

from tokenway.store import Migration

COMPONENT = "batch"

MIGRATIONS: tuple[Migration, ...] = (
    {
        "sqlite": """CREATE TABLE IF NOT EXISTS batch_files (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    purpose TEXT NOT NULL,
    filename TEXT NOT NULL,
    bytes BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    content BLOB NOT NULL
)""",
        "postgres": """CREATE TABLE IF NOT EXISTS batch_files (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    purpose TEXT NOT NULL,
    filename TEXT NOT NULL,
    bytes BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    content BYTEA NOT NULL
)""",
    },
    "CREATE INDEX IF NOT EXISTS batch_files_owner ON batch_files (owner, created_at, id)",
    """CREATE TABLE IF NOT EXISTS batches (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    principal TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    input_file_id TEXT NOT NULL,
    completion_window TEXT NOT NULL,
    status TEXT NOT NULL,
    model TEXT,
    metadata TEXT,
    errors TEXT,
    usage TEXT,
    output_file_id TEXT,
    error_file_id TEXT,
    output_expires_s BIGINT,
    created_at BIGINT NOT NULL,
    in_progress_at BIGINT,
    expires_at BIGINT NOT NULL,
    finalizing_at BIGINT,
    completed_at BIGINT,
    failed_at BIGINT,
    expired_at BIGINT,
    cancelling_at BIGINT,
    cancelled_at BIGINT,
    total INTEGER NOT NULL DEFAULT 0,
    completed INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_until DOUBLE PRECISION
)""",
    "CREATE INDEX IF NOT EXISTS batches_owner ON batches (owner, created_at, id)",
    "CREATE INDEX IF NOT EXISTS batches_status ON batches (status)",
    """CREATE TABLE IF NOT EXISTS batch_lines (
    batch_id TEXT NOT NULL,
    line INTEGER NOT NULL,
    custom_id TEXT NOT NULL,
    body TEXT NOT NULL,
    state TEXT NOT NULL,
    not_before DOUBLE PRECISION NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_until DOUBLE PRECISION,
    sends INTEGER NOT NULL DEFAULT 0,
    first_sent DOUBLE PRECISION,
    last_sent DOUBLE PRECISION,
    prompt_tokens INTEGER,
    target TEXT,
    ok INTEGER,
    status_code INTEGER,
    response TEXT,
    finished_at DOUBLE PRECISION,
    ledger_row TEXT,
    ledgered INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (batch_id, line)
)""",
    "CREATE INDEX IF NOT EXISTS batch_lines_state ON batch_lines (batch_id, state, line)",
    "CREATE INDEX IF NOT EXISTS batch_lines_lease ON batch_lines (state, lease_until)",
    # async tasks: a batch of one line that the task API made, not the Batch API
    "ALTER TABLE batches ADD COLUMN kind TEXT NOT NULL DEFAULT 'batch'",
    """CREATE TABLE IF NOT EXISTS async_tasks (
    id TEXT PRIMARY KEY,
    headers TEXT,
    started_at BIGINT,
    result_status INTEGER,
    result TEXT,
    webhook TEXT,
    hook_state TEXT,
    hook_attempts INTEGER NOT NULL DEFAULT 0,
    hook_next DOUBLE PRECISION,
    hook_error TEXT,
    hook_delivered_at BIGINT,
    lease_owner TEXT,
    lease_until DOUBLE PRECISION
)""",
    "CREATE INDEX IF NOT EXISTS async_tasks_hook ON async_tasks (hook_state, hook_next)",
    # idempotent submission: (owner, idem_key) is unique, so two replicas racing with the same
    # key cannot both insert; `fingerprint` tells a replay from a different request
    """CREATE TABLE IF NOT EXISTS async_task_keys (
    owner TEXT NOT NULL,
    idem_key TEXT NOT NULL,
    task_id TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    PRIMARY KEY (owner, idem_key)
)""",
    "CREATE INDEX IF NOT EXISTS async_task_keys_task ON async_task_keys (task_id)",
    # a batch handed to its provider's own Batch API (`batch.handoff`): the upstream input file
    # and batch, and where the hand-off stands (NULL: not tried; `fallback`: its lines run here)
    "ALTER TABLE batches ADD COLUMN upstream_file_id TEXT",
    "ALTER TABLE batches ADD COLUMN upstream_batch_id TEXT",
    "ALTER TABLE batches ADD COLUMN upstream_state TEXT",
)

"""Async tasks on the job store: each is a `batches` row of kind `async` with one line, so that
the line queue, its leases, the runner and the crash accounting of batch lines serve tasks
unchanged; `async_tasks` holds what a task adds (see `schema`).

    in_progress ──▶ finalizing ──▶ completed | failed      (the line's answer: 2xx or not)
        │   └────────────────────▶ expired                 (its deadline passed, unrun)
        └──▶ cancelling ─────────▶ cancelled               (cancelled while queued)

The batch statuses are the store's; the API shows `queued` or `in_progress` for a task whose
row is `in_progress` or `finalizing`, by its line. Cancelling takes the line out of the queue
in the same statement that checks it is queued (state `cancelled`), so a replica claiming it
at that moment either gets it first, or not at all. A task that ends with a webhook queues its
delivery in the same transaction (`hook_state = 'pending'`): an outbox that any replica
delivers from, at least once.

A submission with an idempotency key claims (owner, key) in `async_task_keys` in the
transaction that stores the task: the primary key, not a read before the write, is what keeps
two replicas racing with one key from both making a task. The claim goes when the task is
reaped, and the key is free again.

Every call is one short transaction and may block: call them through `asyncio.to_thread`.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import msgspec

from tokenway.batch.ids import TASK_CUSTOM_ID
from tokenway.batch.listing import Page, page
from tokenway.batch.objects import TASK_ERRORS, usage_object
from tokenway.domain.types import Usage
from tokenway.store import Database, Tx

__all__ = ["STATUSES", "TASK_LINE", "Held", "TaskStore"]

TASK_LINE = 1
"""The line number of a task's one line."""

Ending = Literal["completed", "cancelled", "expired"]

_ENDED = "status IN ('completed', 'failed', 'cancelled', 'expired')"
_ENDED_AT = "COALESCE(completed_at, failed_at, cancelled_at, expired_at)"
_decode = msgspec.json.decode
_encode = msgspec.json.encode

# What `get` and `list_tasks` read: the task with its line's state (which tells queued from in
# progress, see `objects.task_object`).
_COLUMNS = (
    "b.id, b.endpoint, b.model, b.status, b.created_at, b.expires_at, b.completed_at, "
    "b.failed_at, b.expired_at, b.cancelled_at, b.usage, t.started_at, t.result_status, "
    "t.result, t.webhook, t.hook_state, t.hook_attempts, t.hook_error, t.hook_delivered_at, "
    "l.state AS line_state, l.first_sent"
)
_FROM = (
    "batches b JOIN async_tasks t ON t.id = b.id "
    "LEFT JOIN batch_lines l ON l.batch_id = b.id AND l.line = :line"
)
_RUNNING = "b.status IN ('validating', 'in_progress', 'finalizing')"

STATUSES = {
    "queued": f"{_RUNNING} AND l.state = 'queued'",
    "in_progress": f"{_RUNNING} AND (l.state IS NULL OR l.state <> 'queued')",
    # only while a cancel's ending is retried (the store failed just after it took the line)
    "cancelling": "b.status = 'cancelling'",
    **{s: f"b.status = '{s}'" for s in ("completed", "failed", "expired", "cancelled")},
}
"""The statuses a task shows (`objects.task_object`), each with the condition on the store's
row that gives it: what `list_tasks` filters by."""


class _Served(msgspec.Struct):
    usage: Usage


class Held(NamedTuple):
    """The task that an idempotency key was first submitted with, and that submission's
    fingerprint."""

    task_id: str
    fingerprint: str


class TaskStore:
    """Tasks, their results and their webhook outbox in one `Database`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, row: dict[str, Any], body: str) -> Held | None:
        """Store a new task, in progress with its line queued. `row` has the `batches`
        columns (`id`, `owner`, `principal`, `endpoint`, `model`, `completion_window`,
        `created_at`, `expires_at`), `headers` and `webhook`, and may have an
        `idempotency_key` with the submission's `fingerprint`: if `owner` holds that key
        already, nothing is stored and the task holding it is returned."""
        with self.db.transaction() as tx:
            key = row.get("idempotency_key")
            if key is not None:
                held = _claim_key(tx, row["owner"], key, row["id"], row["fingerprint"])
                if held is not None:
                    return held
            tx.execute(
                "INSERT INTO batches (id, owner, principal, endpoint, input_file_id, "
                "completion_window, status, model, kind, created_at, in_progress_at, "
                "expires_at, total) VALUES (:id, :owner, :principal, :endpoint, '', "
                ":completion_window, 'in_progress', :model, 'async', :created_at, "
                ":created_at, :expires_at, 1)",
                row,
            )
            tx.execute(
                "INSERT INTO async_tasks (id, headers, webhook) VALUES (:id, :headers, :webhook)",
                row,
            )
            tx.execute(
                "INSERT INTO batch_lines (batch_id, line, custom_id, body, state) "
                "VALUES (:id, :line, :custom_id, :body, 'queued')",
                {"id": row["id"], "line": TASK_LINE, "custom_id": TASK_CUSTOM_ID, "body": body},
            )
        return None

    def get(self, task_id: str, owner: str | None) -> dict[str, Any] | None:
        """The task with its line's state (None once the line is purged), if `owner` has it
        (any owner: None)."""
        where = "b.id = :id AND b.kind = 'async'"
        if owner is not None:
            where += " AND b.owner = :owner"
        rows = self.db.fetch(
            f"SELECT {_COLUMNS} FROM {_FROM} WHERE {where}",
            {"id": task_id, "owner": owner, "line": TASK_LINE},
        )
        return rows[0] if rows else None

    def list_tasks(
        self, owner: str, *, limit: int, after: str | None, status: str | None
    ) -> Page | None:
        """`owner`'s tasks, newest first, as `get` reads them, only those of `status` (a key of
        `STATUSES`) if given; None when `after` names no task of theirs (whatever its
        status: a task the client saw may have moved on since)."""
        return page(
            self.db,
            _FROM,
            _COLUMNS,
            "b.owner = :owner AND b.kind = 'async'",
            {"owner": owner, "line": TASK_LINE},
            limit,
            after,
            False,
            alias="b.",
            narrow=STATUSES[status] if status is not None else "",
        )

    def cancel(self, task_id: str, owner: str, clock: int) -> bool:
        """Take `owner`'s queued task out of the queue and set it cancelling (the runner ends
        it); False if it is not queued. Raises LookupError if `owner` has no such task."""
        with self.db.transaction() as tx:
            found = tx.fetch(
                "SELECT status FROM batches WHERE id = :id AND owner = :owner AND kind = 'async'",
                {"id": task_id, "owner": owner},
            )
            if not found:
                raise LookupError(task_id)
            taken: int = tx.execute(
                "UPDATE batch_lines SET state = 'cancelled', lease_owner = NULL, "
                "lease_until = NULL WHERE batch_id = :id AND line = :line AND state = 'queued' "
                "AND EXISTS (SELECT 1 FROM batches WHERE id = :id AND status = 'in_progress')",
                {"id": task_id, "line": TASK_LINE},
            )
            if taken != 1:
                return False
            tx.execute(
                "UPDATE batches SET status = 'cancelling', cancelling_at = :clock WHERE id = :id",
                {"id": task_id, "clock": clock},
            )
            return True

    def end(self, task_id: str, ending: Ending, owner: str, clock: int) -> bool:
        """Give a task this replica is ending (under its lease) its final status and result,
        and queue its webhook; False if the task is no longer this replica's to end."""
        with self.db.transaction() as tx:
            held = tx.fetch(
                "SELECT l.ok, l.status_code, l.response, l.ledger_row, l.first_sent "
                "FROM batches b LEFT JOIN batch_lines l ON l.batch_id = b.id AND l.line = :line "
                "WHERE b.id = :id AND b.lease_owner = :me",
                {"id": task_id, "me": owner, "line": TASK_LINE},
            )
            if not held:
                return False
            line = held[0]
            status: str = ending
            result_status: int | None = None
            result: str | None = None
            usage: str | None = None
            if ending == "completed":
                status = "completed" if line["ok"] else "failed"
                if line["status_code"] is not None:
                    result_status, result = int(line["status_code"]), line["response"]
                if line["ok"] and line["ledger_row"]:
                    served = _decode(line["ledger_row"], type=_Served).usage
                    usage = _encode(usage_object([served])).decode()
            else:
                # An unfinished line is done now: a replica that still runs it late must not
                # store a result for a task that has ended (its sends are accounted as lost).
                tx.execute(
                    "UPDATE batch_lines SET state = 'done', ok = 0, status_code = NULL, "
                    "response = :err, finished_at = :now, lease_owner = NULL, "
                    "lease_until = NULL WHERE batch_id = :id AND state <> 'done'",
                    {
                        "id": task_id,
                        "now": float(clock),
                        "err": _encode(TASK_ERRORS[ending]).decode(),
                    },
                )
            ok = status == "completed"
            changed: int = tx.execute(
                f"UPDATE batches SET status = :status, {status}_at = :clock, completed = :c, "
                "failed = :f, usage = :usage, lease_owner = NULL, lease_until = NULL "
                "WHERE id = :id AND lease_owner = :me",
                {
                    "id": task_id,
                    "me": owner,
                    "status": status,
                    "clock": clock,
                    "c": int(ok),
                    "f": int(status == "failed"),
                    "usage": usage,
                },
            )
            first = line["first_sent"]
            tx.execute(
                "UPDATE async_tasks SET started_at = :started, result_status = :rs, "
                "result = :result, hook_state = CASE WHEN webhook IS NULL THEN NULL "
                "ELSE 'pending' END, hook_next = :clock WHERE id = :id",
                {
                    "id": task_id,
                    "started": None if first is None else int(first),
                    "rs": result_status,
                    "result": result,
                    "clock": float(clock),
                },
            )
            return changed == 1

    # ---- the webhook outbox -------------------------------------------------------------

    def claim_hooks(self, owner: str, n: int, now: float, until: float) -> list[dict[str, Any]]:
        """Up to `n` webhook deliveries due at `now`, leased to `owner` until `until`: each
        task's `id`, `webhook` (the URL) and `hook_attempts` made so far."""
        free = "(lease_until IS NULL OR lease_until < :now)"
        return self.db.fetch(
            "UPDATE async_tasks SET lease_owner = :me, lease_until = :until WHERE id IN ("
            " SELECT id FROM async_tasks WHERE hook_state = 'pending' AND hook_next <= :now"
            f" AND {free} ORDER BY hook_next LIMIT :n) AND hook_state = 'pending' AND {free} "
            "RETURNING id, webhook, hook_attempts",
            {"me": owner, "until": until, "now": now, "n": n},
        )

    def hook_done(
        self,
        task_id: str,
        owner: str,
        *,
        delivered: bool,
        error: str | None,
        retry_at: float | None,
        clock: int,
    ) -> None:
        """Record a delivery attempt: delivered, to be retried at `retry_at`, or (neither)
        given up."""
        state = "delivered" if delivered else ("pending" if retry_at is not None else "failed")
        self.db.execute(
            "UPDATE async_tasks SET hook_attempts = hook_attempts + 1, hook_state = :state, "
            "hook_next = :next, hook_error = :error, hook_delivered_at = :at, "
            "lease_owner = NULL, lease_until = NULL WHERE id = :id AND lease_owner = :me",
            {
                "id": task_id,
                "me": owner,
                "state": state,
                "next": retry_at,
                "error": error,
                "at": clock if delivered else None,
            },
        )

    def reap(self, ended_before: int) -> int:
        """Delete tasks that ended before `ended_before` and owe no webhook delivery (their
        lines go with `JobStore.purge_lines`, their rows stay in the ledger)."""
        old = f"kind = 'async' AND {_ENDED} AND {_ENDED_AT} < :t"
        with self.db.transaction() as tx:
            tx.execute(
                f"DELETE FROM async_tasks WHERE id IN (SELECT id FROM batches WHERE {old}) "
                "AND (hook_state IS NULL OR hook_state <> 'pending')",
                {"t": ended_before},
            )
            # a reaped task's idempotency key is free again
            tx.execute(
                f"DELETE FROM async_task_keys WHERE task_id IN (SELECT id FROM batches WHERE "
                f"{old}) AND NOT EXISTS (SELECT 1 FROM async_tasks t "
                "WHERE t.id = async_task_keys.task_id)",
                {"t": ended_before},
            )
            gone: int = tx.execute(
                f"DELETE FROM batches WHERE {old} AND NOT EXISTS "
                "(SELECT 1 FROM async_tasks t WHERE t.id = batches.id)",
                {"t": ended_before},
            )
            return gone


def _claim_key(tx: Tx, owner: str, key: str, task_id: str, fingerprint: str) -> Held | None:
    """Claim `owner`'s idempotency `key` for `task_id`; None if claimed, else the task that
    holds it. On PostgreSQL an insert racing another transaction's uncommitted claim of the
    same key waits for it to commit (then finds it) or roll back (then claims it)."""
    while True:
        claimed = tx.execute(
            "INSERT INTO async_task_keys (owner, idem_key, task_id, fingerprint) "
            "VALUES (:owner, :key, :id, :fp) ON CONFLICT (owner, idem_key) DO NOTHING",
            {"owner": owner, "key": key, "id": task_id, "fp": fingerprint},
        )
        if claimed == 1:
            return None
        rows = tx.fetch(
            "SELECT task_id, fingerprint FROM async_task_keys "
            "WHERE owner = :owner AND idem_key = :key",
            {"owner": owner, "key": key},
        )
        if rows:
            return Held(rows[0]["task_id"], rows[0]["fingerprint"])
        # its task was reaped between the two statements: the key is free, claim it again

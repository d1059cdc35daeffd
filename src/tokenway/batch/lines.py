"""A batch's request lines as a work queue shared by every replica.

A replica `claim`s queued lines of an in-progress batch under a lease (its owner id and an
expiry it `renew`s while it runs them). Before it sends a line upstream it `mark_sent`s it:
`sends` counts the sends that have no recorded result yet, with the prompt estimate and target
of the last one and the time of the first (the ledger row's timestamp, the same on every run).
`finish` stores the result and the line's ledger row in one transaction, once per line (the
first result wins; a replica that lost its lease to another gives way), and counts it on the
batch. A line refused before it was sent (its key's rate limit, a full model) is `release`d
with its send undone. Leases that lapse (a replica killed or stuck) are `reap`ed back to the
queue, sends and all: whoever runs the line next accounts those sends as lost attempts.

Every call is one short transaction and may block: call them through `asyncio.to_thread`.
The calls a line makes on its way (claim, mark_sent, finish) are single statements with
`RETURNING`, so that on PostgreSQL each is one round trip.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from tokenway.store import Database

__all__ = ["ClaimedLine", "LineQueue"]


class ClaimedLine(NamedTuple):
    """A line this replica now holds, as it was when claimed."""

    batch_id: str
    line: int
    custom_id: str
    body: str
    sends: int
    first_sent: float | None
    last_sent: float | None
    prompt_tokens: int | None
    target: str | None


_FINISH = (
    "UPDATE batch_lines SET state = 'done', ok = :ok, status_code = :status, "
    "response = :response, finished_at = :now, ledger_row = :row, ledgered = 0, "
    "lease_owner = NULL, lease_until = NULL "
    "WHERE batch_id = :b AND line = :l AND state <> 'done' "
    "AND (lease_owner = :owner OR lease_owner IS NULL)"
)


class LineQueue:
    """Claims, leases, results and the ledger outbox of batch lines."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def claim(
        self, batch_id: str, owner: str, n: int, now: float, until: float, clock: int
    ) -> list[ClaimedLine]:
        """Up to `n` queued lines of batch `batch_id`, first lines first, while it is in
        progress and within its window at `clock` (the API objects' time)."""
        rows = self.db.fetch(
            "UPDATE batch_lines SET state = 'running', lease_owner = :owner, "
            "lease_until = :until "
            "WHERE batch_id = :b AND state = 'queued' AND line IN ("
            " SELECT line FROM batch_lines WHERE batch_id = :b AND state = 'queued'"
            " AND not_before <= :now ORDER BY line LIMIT :n) "
            "AND EXISTS (SELECT 1 FROM batches WHERE id = :b AND status = 'in_progress' "
            "AND expires_at > :clock) "
            "RETURNING line, custom_id, body, sends, first_sent, last_sent, prompt_tokens, target",
            {"b": batch_id, "owner": owner, "until": until, "now": now, "n": n, "clock": clock},
        )
        return sorted(
            (
                ClaimedLine(
                    batch_id,
                    int(r["line"]),
                    r["custom_id"],
                    r["body"],
                    int(r["sends"]),
                    r["first_sent"],
                    r["last_sent"],
                    r["prompt_tokens"],
                    r["target"],
                )
                for r in rows
            ),
            key=lambda c: c.line,
        )

    def mark_sent(
        self, batch_id: str, line: int, owner: str, now: float, prompt: int, target: str | None
    ) -> bool:
        """Record that the line is about to be sent; False if this replica no longer holds it
        (then it must not send it)."""
        changed = self.db.fetch(
            "UPDATE batch_lines SET sends = sends + 1, first_sent = COALESCE(first_sent, :now), "
            "last_sent = :now, prompt_tokens = :prompt, target = :target "
            "WHERE batch_id = :b AND line = :l AND state = 'running' AND lease_owner = :owner "
            "RETURNING line",
            {
                "b": batch_id,
                "l": line,
                "owner": owner,
                "now": now,
                "prompt": prompt,
                "target": target,
            },
        )
        return len(changed) == 1

    def finish(
        self,
        batch_id: str,
        line: int,
        owner: str,
        *,
        ok: bool,
        status: int,
        response: str,
        row: str | None,
        now: float,
    ) -> bool:
        """Store the line's result and ledger row and count it on its batch; False when the
        line already has a result or another replica holds it now."""
        params = {
            "b": batch_id,
            "l": line,
            "owner": owner,
            "ok": int(ok),
            "status": status,
            "response": response,
            "row": row,
            "now": now,
        }
        if self.db.dialect == "postgres":
            # one statement, one round trip: the count only moves if the line did
            done = self.db.fetch(
                f"WITH done AS ({_FINISH} RETURNING ok) UPDATE batches SET "
                "completed = completed + (SELECT COALESCE(SUM(ok), 0) FROM done), "
                "failed = failed + (SELECT COUNT(*) - COALESCE(SUM(ok), 0) FROM done) "
                "WHERE id = :b AND EXISTS (SELECT 1 FROM done) RETURNING id",
                params,
            )
            return len(done) == 1
        with self.db.transaction() as tx:
            if tx.execute(_FINISH, params) != 1:
                return False
            tx.execute(
                "UPDATE batches SET completed = completed + :c, failed = failed + :f WHERE id = :b",
                {"b": batch_id, "c": int(ok), "f": int(not ok)},
            )
            return True

    def release(
        self, batch_id: str, line: int, owner: str, not_before: float, *, unsend: bool
    ) -> None:
        """Put a held line back in the queue, not to be claimed before `not_before`;
        `unsend` undoes its `mark_sent` (it never reached an upstream), and a line left with
        no send forgets when it was first sent (its ledger row starts when one is)."""
        self.db.execute(
            "UPDATE batch_lines SET state = 'queued', lease_owner = NULL, lease_until = NULL, "
            "not_before = :nb, sends = sends - :undo, "
            "first_sent = CASE WHEN sends - :undo > 0 THEN first_sent END "
            "WHERE batch_id = :b AND line = :l AND state = 'running' AND lease_owner = :owner",
            {"b": batch_id, "l": line, "owner": owner, "nb": not_before, "undo": int(unsend)},
        )

    def release_owner(self, owner: str) -> int:
        """Put back every line `owner` holds (a replica shutting down); sends stay counted."""
        return self.db.execute(
            "UPDATE batch_lines SET state = 'queued', lease_owner = NULL, lease_until = NULL "
            "WHERE state = 'running' AND lease_owner = :owner",
            {"owner": owner},
        )

    def renew(
        self,
        owner: str,
        until: float,
        lines: Sequence[tuple[str, int]],
        batches: Sequence[str] = (),
    ) -> None:
        """Extend `owner`'s leases on the lines and batches it is working on (and no others:
        a line whose work ended without a result must lapse and go back to the queue)."""
        if not lines and not batches:
            return
        with self.db.transaction() as tx:
            for batch_id, line in lines:
                tx.execute(
                    "UPDATE batch_lines SET lease_until = :until WHERE batch_id = :b "
                    "AND line = :l AND state = 'running' AND lease_owner = :owner",
                    {"b": batch_id, "l": line, "owner": owner, "until": until},
                )
            for batch_id in batches:
                tx.execute(
                    "UPDATE batches SET lease_until = :until "
                    "WHERE id = :b AND lease_owner = :owner",
                    {"b": batch_id, "owner": owner, "until": until},
                )

    def reap(self, now: float) -> int:
        """Requeue lines whose lease lapsed (their replica died or stalled)."""
        return self.db.execute(
            "UPDATE batch_lines SET state = 'queued', lease_owner = NULL, lease_until = NULL "
            "WHERE state = 'running' AND lease_until < :now",
            {"now": now},
        )

    def mark_ledgered(self, lines: Sequence[tuple[str, int]]) -> None:
        """The ledger has these lines' rows durably: drop them from the outbox."""
        if not lines:
            return
        with self.db.transaction() as tx:
            for batch_id, line in lines:
                tx.execute(
                    "UPDATE batch_lines SET ledgered = 1 WHERE batch_id = :b AND line = :l",
                    {"b": batch_id, "l": line},
                )

    def unledgered(self, batch_id: str) -> list[dict[str, Any]]:
        """Ledger rows of the batch's lines that the ledger may not have yet."""
        return self.db.fetch(
            "SELECT line, ledger_row FROM batch_lines WHERE batch_id = :b "
            "AND ledger_row IS NOT NULL AND ledgered = 0 ORDER BY line",
            {"b": batch_id},
        )

    def lost(self, batch_id: str) -> list[dict[str, Any]]:
        """Lines sent but never finished and not to be run again (their batch was cancelled or
        expired), that have no ledger row yet."""
        return self.db.fetch(
            "SELECT line, custom_id, sends, first_sent, last_sent, prompt_tokens, target "
            "FROM batch_lines WHERE batch_id = :b AND state <> 'done' AND sends > 0 "
            "AND ledger_row IS NULL ORDER BY line",
            {"b": batch_id},
        )

    def put_row(self, batch_id: str, line: int, row: str) -> None:
        """Give a lost line its ledger row (into the outbox)."""
        self.db.execute(
            "UPDATE batch_lines SET ledger_row = :row, ledgered = 0 "
            "WHERE batch_id = :b AND line = :l AND ledger_row IS NULL",
            {"b": batch_id, "l": line, "row": row},
        )

"""The job store's side of handing a batch to its provider's Batch API (`batch.handoff`).

A replica takes the hand-off of an in-progress batch under the batch's own lease (the one
validation and finalization use, renewed by the runner's heartbeat while it works), so one
replica at a time uploads, creates and polls the upstream batch. The upstream file and batch
ids are saved as soon as they exist, so whoever holds the lease next (another replica, or this
one restarted) resumes the same upstream batch rather than paying for a second one.
`upstream_state` is NULL (not tried), `running` (an upstream batch exists), `done` (its results
are recorded) or `fallback` (the lines left run in-process, as any batch's do).

Every call is one short transaction and may block: call them through `asyncio.to_thread`.
"""

from __future__ import annotations

from typing import Any

from tokenway.store import Database

__all__ = ["OPEN_STATES", "HandoffStore"]

OPEN_STATES = (None, "running")
"""Upstream states of a batch whose lines the hand-off (not the runner) takes care of."""

_FREE = "(lease_until IS NULL OR lease_until < :now)"


class HandoffStore:
    """Leases, upstream ids and line results of batches handed to a provider."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def claim(self, batch_id: str, owner: str, now: float, until: float) -> dict[str, Any] | None:
        """Lease an in-progress batch still to hand off (or being handed off by a replica
        whose lease lapsed) to `owner`; its row, or None."""
        rows = self.db.fetch(
            "UPDATE batches SET lease_owner = :me, lease_until = :until "
            f"WHERE id = :b AND kind = 'batch' AND status = 'in_progress' AND {_FREE} "
            "AND (upstream_state IS NULL OR upstream_state = 'running') "
            "RETURNING id, upstream_file_id, upstream_batch_id, upstream_state",
            {"b": batch_id, "me": owner, "until": until, "now": now},
        )
        return rows[0] if rows else None

    def save(self, batch_id: str, owner: str, file_id: str, upstream_id: str | None) -> bool:
        """Remember the upstream input file (and batch, once created); False if the lease was
        lost."""
        state = ", upstream_batch_id = :u, upstream_state = 'running'" if upstream_id else ""
        changed = self.db.execute(
            f"UPDATE batches SET upstream_file_id = :f{state} WHERE id = :b AND lease_owner = :me",
            {"b": batch_id, "me": owner, "f": file_id, "u": upstream_id},
        )
        return changed == 1

    def held(self, batch_id: str, owner: str) -> dict[str, Any] | None:
        """The batch's status and window while `owner` still holds it, else None."""
        rows = self.db.fetch(
            "SELECT status, expires_at FROM batches WHERE id = :b AND lease_owner = :me",
            {"b": batch_id, "me": owner},
        )
        return rows[0] if rows else None

    def release(self, batch_id: str, owner: str, state: str | None) -> None:
        """Give up the lease, setting `upstream_state` to `state` (None: unchanged)."""
        self.db.execute(
            "UPDATE batches SET upstream_state = COALESCE(:s, upstream_state), "
            "lease_owner = NULL, lease_until = NULL WHERE id = :b AND lease_owner = :me",
            {"b": batch_id, "me": owner, "s": state},
        )

    def queued(self, batch_id: str, now: float) -> list[dict[str, Any]]:
        """The lines without a result, stamped as first sent at `now` unless they already
        were (the ledger row's time, the same on every resumption)."""
        with self.db.transaction() as tx:
            tx.execute(
                "UPDATE batch_lines SET first_sent = :now WHERE batch_id = :b "
                "AND state = 'queued' AND first_sent IS NULL",
                {"b": batch_id, "now": now},
            )
            rows: list[dict[str, Any]] = tx.fetch(
                "SELECT line, custom_id, body, first_sent FROM batch_lines "
                "WHERE batch_id = :b AND state = 'queued' ORDER BY line",
                {"b": batch_id},
            )
            return rows

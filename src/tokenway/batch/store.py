"""The job store: files and batches on the `store` database, with the batch lifecycle.

    validating ──▶ in_progress ──▶ finalizing ──▶ completed
        │   │            │  └──────────────────▶ expired     (completion window passed)
        │   └────────────┴──▶ cancelling ──────▶ cancelled
        └──▶ failed                                          (the input file is malformed)

Every object belongs to the key that created it (`owner`, the key's name) and is invisible to
any other key. A replica takes a batch to validate or finalize under a lease (owner and expiry)
so that one replica does it and another takes over if that one dies; finalizing is idempotent
(the output and error files have ids derived from the batch). Times are whole epoch seconds.
Async tasks are batches of one line and of kind `async` (`tasks`, batch/task_store.py): the
Batch API never sees them, and they end without files.

Every call is one short transaction and may block: call them through `asyncio.to_thread`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import msgspec

from tokenway.batch import schema
from tokenway.batch.ids import result_file_id
from tokenway.batch.lines import LineQueue
from tokenway.batch.listing import Page, page
from tokenway.batch.objects import error_record, response_record, usage_object
from tokenway.batch.task_store import TaskStore
from tokenway.batch.validate import LineError, Request
from tokenway.domain.types import Usage
from tokenway.store import Database, Tx

__all__ = ["Ending", "JobStore", "Page"]

Ending = Literal["completed", "cancelled", "expired"]

_FILE_COLUMNS = "id, owner, purpose, filename, bytes, created_at, expires_at"
_INSERT_CHUNK = 200
# A batch whose lines are all done completes, even once its window has passed.
_UNFINISHED = "NOT (status = 'in_progress' AND completed + failed >= total)"
_EXPIRED_MESSAGE = "This request could not be executed before the completion window expired."
_decode = msgspec.json.decode
_encode = msgspec.json.encode


class _Served(msgspec.Struct):
    usage: Usage


class JobStore:
    """Files, batches and their lines in one `Database`."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.lines = LineQueue(db)
        self.tasks = TaskStore(db)
        self._migrated = False

    def ensure(self) -> None:
        """Create or update the tables once (every replica may, at once); raises
        `StoreUnavailable` while the database cannot be reached."""
        if not self._migrated:
            self.db.migrate(schema.COMPONENT, schema.MIGRATIONS)
            self._migrated = True

    def close(self) -> None:
        self.db.close()

    # ---- files --------------------------------------------------------------------------

    def put_file(
        self,
        file_id: str,
        owner: str,
        purpose: str,
        filename: str,
        content: bytes,
        created_at: int,
        expires_at: int | None,
    ) -> dict[str, Any]:
        """Store an uploaded file; returns its row (without the content)."""
        row = {
            "id": file_id,
            "owner": owner,
            "purpose": purpose,
            "filename": filename,
            "bytes": len(content),
            "created_at": created_at,
            "expires_at": expires_at,
        }
        self.db.execute(
            "INSERT INTO batch_files (id, owner, purpose, filename, bytes, created_at, "
            "expires_at, content) VALUES (:id, :owner, :purpose, :filename, :bytes, "
            ":created_at, :expires_at, :content)",
            {**row, "content": content},
        )
        return row

    def get_file(self, owner: str, file_id: str, now: int) -> dict[str, Any] | None:
        """The file's row, if `owner` has it and it has not expired."""
        rows = self.db.fetch(
            f"SELECT {_FILE_COLUMNS} FROM batch_files WHERE id = :id AND owner = :owner "
            "AND (expires_at IS NULL OR expires_at > :now)",
            {"id": file_id, "owner": owner, "now": now},
        )
        return rows[0] if rows else None

    def file_content(self, owner: str, file_id: str, now: int) -> bytes | None:
        """The file's bytes, if `owner` has it and it has not expired."""
        rows = self.db.fetch(
            "SELECT content FROM batch_files WHERE id = :id AND owner = :owner "
            "AND (expires_at IS NULL OR expires_at > :now)",
            {"id": file_id, "owner": owner, "now": now},
        )
        return bytes(rows[0]["content"]) if rows else None

    def list_files(
        self,
        owner: str,
        now: int,
        *,
        limit: int,
        after: str | None,
        ascending: bool,
        purpose: str | None,
    ) -> Page | None:
        """`owner`'s files by creation time; None when `after` names no file of theirs."""
        where = "owner = :owner AND (expires_at IS NULL OR expires_at > :now)"
        params: dict[str, Any] = {"owner": owner, "now": now}
        if purpose is not None:
            where += " AND purpose = :purpose"
            params["purpose"] = purpose
        return page(self.db, "batch_files", _FILE_COLUMNS, where, params, limit, after, ascending)

    def delete_file(self, owner: str, file_id: str) -> bool:
        """Delete `owner`'s file; False if they have none of that id."""
        changed = self.db.execute(
            "DELETE FROM batch_files WHERE id = :id AND owner = :owner",
            {"id": file_id, "owner": owner},
        )
        return changed == 1

    def reap_files(self, now: int) -> int:
        """Delete files past their expiry."""
        return self.db.execute(
            "DELETE FROM batch_files WHERE expires_at IS NOT NULL AND expires_at <= :now",
            {"now": now},
        )

    def purge_lines(self, ended_before: int) -> int:
        """Delete the lines of batches that ended before `ended_before`: their results are in
        the output and error files, their rows in the ledger. (They are kept a while after
        the end for a line a slow replica finishes late, whose row still has to be
        recorded.)"""
        return self.db.execute(
            "DELETE FROM batch_lines WHERE batch_id IN (SELECT id FROM batches WHERE "
            "status IN ('completed', 'failed', 'cancelled', 'expired') AND "
            "COALESCE(completed_at, failed_at, cancelled_at, expired_at) < :t)",
            {"t": ended_before},
        )

    # ---- batches ------------------------------------------------------------------------

    def create_batch(self, row: dict[str, Any]) -> dict[str, Any]:
        """Store a new batch (status `validating`); returns it as `get_batch` would."""
        self.db.execute(
            "INSERT INTO batches (id, owner, principal, endpoint, input_file_id, "
            "completion_window, status, metadata, output_expires_s, created_at, expires_at) "
            "VALUES (:id, :owner, :principal, :endpoint, :input_file_id, :completion_window, "
            "'validating', :metadata, :output_expires_s, :created_at, :expires_at)",
            row,
        )
        found = self.get_batch(row["owner"], row["id"])
        assert found is not None
        return found

    def get_batch(self, owner: str, batch_id: str) -> dict[str, Any] | None:
        rows = self.db.fetch(
            "SELECT * FROM batches WHERE id = :id AND owner = :owner AND kind = 'batch'",
            {"id": batch_id, "owner": owner},
        )
        return rows[0] if rows else None

    def list_batches(self, owner: str, *, limit: int, after: str | None) -> Page | None:
        """`owner`'s batches, newest first; None when `after` names no batch of theirs."""
        return page(
            self.db,
            "batches",
            "*",
            "owner = :owner AND kind = 'batch'",
            {"owner": owner},
            limit,
            after,
            False,
        )

    def cancel_batch(self, owner: str, batch_id: str, now: int) -> tuple[dict[str, Any], bool]:
        """Ask a validating or running batch to stop: (the batch, whether it is now
        cancelling or cancelled). Raises LookupError if `owner` has no such batch."""
        with self.db.transaction() as tx:
            tx.execute(
                "UPDATE batches SET status = 'cancelling', cancelling_at = :now "
                "WHERE id = :id AND owner = :owner AND kind = 'batch' "
                "AND status IN ('validating', 'in_progress')",
                {"id": batch_id, "owner": owner, "now": now},
            )
            rows = tx.fetch(
                "SELECT * FROM batches WHERE id = :id AND owner = :owner AND kind = 'batch'",
                {"id": batch_id, "owner": owner},
            )
        if not rows:
            raise LookupError(batch_id)
        return rows[0], rows[0]["status"] in ("cancelling", "cancelled")

    def active_batches(self, now: int) -> list[dict[str, Any]]:
        """Batches and async tasks whose lines may run now, the earliest deadline first (and
        the oldest among equal deadlines), with a task's routing `headers` and where a hand-off to
        the provider's Batch API stands (`upstream_state`)."""
        return self.db.fetch(
            "SELECT b.id, b.owner, b.principal, b.endpoint, b.model, b.kind, b.expires_at, "
            "b.upstream_state, t.headers FROM batches b LEFT JOIN async_tasks t ON t.id = b.id "
            "WHERE b.status = 'in_progress' AND b.expires_at > :now "
            "ORDER BY b.expires_at, b.created_at, b.id",
            {"now": now},
        )

    # ---- validation ---------------------------------------------------------------------

    def claim_validation(
        self, owner: str, now: float, until: float
    ) -> tuple[dict[str, Any], bytes | None] | None:
        """The oldest batch waiting for validation, leased to `owner`, with its input file's
        content (None if the file is gone); None when there is none."""
        rows = self.db.fetch(
            "UPDATE batches SET lease_owner = :me, lease_until = :until WHERE id = ("
            " SELECT id FROM batches WHERE status = 'validating'"
            " AND (lease_until IS NULL OR lease_until < :now) ORDER BY created_at, id LIMIT 1) "
            "AND status = 'validating' AND (lease_until IS NULL OR lease_until < :now) "
            "RETURNING id, owner, principal, endpoint, input_file_id",
            {"me": owner, "until": until, "now": now},
        )
        if not rows:
            return None
        batch = rows[0]
        found = self.db.fetch(
            "SELECT content FROM batch_files WHERE id = :f AND owner = :o",
            {"f": batch["input_file_id"], "o": batch["owner"]},
        )
        return batch, (bytes(found[0]["content"]) if found else None)

    def start_batch(
        self, batch_id: str, owner: str, model: str | None, requests: Sequence[Request], now: int
    ) -> bool:
        """Queue a validated batch's lines and set it in progress; False if it is no longer
        this replica's to start (cancelled meanwhile, or its lease lapsed)."""
        with self.db.transaction() as tx:
            changed: int = tx.execute(
                "UPDATE batches SET status = 'in_progress', in_progress_at = :now, "
                "model = :model, total = :n, lease_owner = NULL, lease_until = NULL "
                "WHERE id = :id AND status = 'validating' AND lease_owner = :me",
                {"id": batch_id, "me": owner, "now": now, "model": model, "n": len(requests)},
            )
            if changed != 1:
                tx.execute(
                    "UPDATE batches SET lease_owner = NULL, lease_until = NULL "
                    "WHERE id = :id AND lease_owner = :me",
                    {"id": batch_id, "me": owner},
                )
                return False
            for start in range(0, len(requests), _INSERT_CHUNK):
                _insert_lines(tx, batch_id, requests[start : start + _INSERT_CHUNK])
            return True

    def fail_batch(self, batch_id: str, owner: str, errors: Sequence[LineError], now: int) -> bool:
        """Fail a batch whose input did not validate, with its errors."""
        with self.db.transaction() as tx:
            changed: int = tx.execute(
                "UPDATE batches SET status = 'failed', failed_at = :now, errors = :errors, "
                "lease_owner = NULL, lease_until = NULL "
                "WHERE id = :id AND status = 'validating' AND lease_owner = :me",
                {"id": batch_id, "me": owner, "now": now, "errors": _encode(errors).decode()},
            )
            if changed != 1:
                tx.execute(
                    "UPDATE batches SET lease_owner = NULL, lease_until = NULL "
                    "WHERE id = :id AND lease_owner = :me",
                    {"id": batch_id, "me": owner},
                )
            return changed == 1

    # ---- finalization -------------------------------------------------------------------

    def finalizable(self, now: float, clock: int) -> list[tuple[str, Ending]]:
        """Batches ready to end, and how: every line done (completed), asked to cancel with no
        line running under a live lease (cancelled), past their window (expired). `now` is
        the time leases are measured by, `clock` the time of the API's objects."""
        free = "(lease_until IS NULL OR lease_until < :now)"
        idle = (
            "NOT EXISTS (SELECT 1 FROM batch_lines l WHERE l.batch_id = batches.id "
            "AND l.state = 'running' AND l.lease_until >= :now)"
        )
        p = {"now": now, "clock": clock}
        out: list[tuple[str, Ending]] = []
        for r in self.db.fetch(
            f"SELECT id FROM batches WHERE {free} AND ((status = 'in_progress' "
            "AND completed + failed >= total) OR status = 'finalizing')",
            p,
        ):
            out.append((r["id"], "completed"))
        for r in self.db.fetch(
            f"SELECT id FROM batches WHERE status = 'cancelling' AND {free} AND {idle}", p
        ):
            out.append((r["id"], "cancelled"))
        for r in self.db.fetch(
            f"SELECT id FROM batches WHERE status IN ('validating', 'in_progress') "
            f"AND expires_at <= :clock AND {free} AND {idle} AND {_UNFINISHED}",
            p,
        ):
            out.append((r["id"], "expired"))
        return out

    def claim_finalize(
        self, batch_id: str, ending: Ending, owner: str, now: float, until: float, clock: int
    ) -> dict[str, Any] | None:
        """Lease a batch to `owner` to end it (a completing batch turns `finalizing`); returns
        the batch, or None if it is not (or no longer) ready or someone else has it."""
        free = "(lease_until IS NULL OR lease_until < :now)"
        p = {"id": batch_id, "me": owner, "now": now, "until": until, "clock": clock}
        if ending == "completed":
            sql = (
                "UPDATE batches SET status = 'finalizing', "
                "finalizing_at = COALESCE(finalizing_at, :clock), lease_owner = :me, "
                f"lease_until = :until WHERE id = :id AND {free} AND ((status = 'in_progress' "
                "AND completed + failed >= total) OR status = 'finalizing') RETURNING *"
            )
        elif ending == "cancelled":
            sql = (
                "UPDATE batches SET lease_owner = :me, lease_until = :until "
                f"WHERE id = :id AND {free} AND status = 'cancelling' RETURNING *"
            )
        else:
            sql = (
                "UPDATE batches SET lease_owner = :me, lease_until = :until "
                f"WHERE id = :id AND {free} AND status IN ('validating', 'in_progress') "
                f"AND expires_at <= :clock AND {_UNFINISHED} RETURNING *"
            )
        rows = self.db.fetch(sql, p)
        return rows[0] if rows else None

    def end_batch(self, batch_id: str, ending: Ending, owner: str, now: int) -> bool:
        """Write the output and error files of a batch this replica is ending and give it its
        final status, counts and usage; lines not done by now are expired if it expired."""
        with self.db.transaction() as tx:
            held = tx.fetch(
                "SELECT owner, output_expires_s FROM batches WHERE id = :id AND lease_owner = :me",
                {"id": batch_id, "me": owner},
            )
            if not held:
                return False
            if ending == "expired":
                tx.execute(
                    "UPDATE batch_lines SET state = 'done', ok = 0, status_code = NULL, "
                    "response = :err, finished_at = :now, lease_owner = NULL, "
                    "lease_until = NULL WHERE batch_id = :id AND state <> 'done'",
                    {
                        "id": batch_id,
                        "now": float(now),
                        "err": _encode(
                            {"code": "batch_expired", "message": _EXPIRED_MESSAGE}
                        ).decode(),
                    },
                )
            outputs: list[bytes] = []
            errors: list[bytes] = []
            served: list[Usage] = []
            for r in tx.fetch(
                "SELECT custom_id, ok, status_code, response, ledger_row FROM batch_lines "
                "WHERE batch_id = :id AND state = 'done' ORDER BY line",
                {"id": batch_id},
            ):
                if r["status_code"] is None:
                    err = _decode(r["response"])
                    errors.append(
                        error_record(batch_id, r["custom_id"], err["code"], err["message"])
                    )
                    continue
                record = response_record(
                    batch_id, r["custom_id"], int(r["status_code"]), r["response"]
                )
                (outputs if r["ok"] else errors).append(record)
                if r["ok"] and r["ledger_row"]:
                    served.append(_decode(r["ledger_row"], type=_Served).usage)
            owner_key = held[0]["owner"]
            expires_s = held[0]["output_expires_s"]
            expires_at = None if expires_s is None else now + int(expires_s)
            output_id = _put_result(tx, batch_id, "output", owner_key, outputs, now, expires_at)
            error_id = _put_result(tx, batch_id, "error", owner_key, errors, now, expires_at)
            changed: int = tx.execute(
                f"UPDATE batches SET status = :ending, {ending}_at = :now, "
                "output_file_id = :out, error_file_id = :err, completed = :c, failed = :f, "
                "usage = :usage, lease_owner = NULL, lease_until = NULL "
                "WHERE id = :id AND lease_owner = :me",
                {
                    "id": batch_id,
                    "me": owner,
                    "ending": ending,
                    "now": now,
                    "out": output_id,
                    "err": error_id,
                    "c": len(outputs),
                    "f": len(errors),
                    "usage": _encode(usage_object(served)).decode() if served else None,
                },
            )
            return changed == 1


def _insert_lines(tx: Tx, batch_id: str, chunk: Sequence[Request]) -> None:
    values = []
    params: dict[str, Any] = {"b": batch_id}
    for i, req in enumerate(chunk):
        values.append(f"(:b, :l{i}, :c{i}, :d{i}, 'queued')")
        params[f"l{i}"] = req.line
        params[f"c{i}"] = req.custom_id
        params[f"d{i}"] = req.body.decode("utf-8")
    tx.execute(
        "INSERT INTO batch_lines (batch_id, line, custom_id, body, state) VALUES "
        + ", ".join(values)
        + " ON CONFLICT DO NOTHING",
        params,
    )


def _put_result(
    tx: Tx,
    batch_id: str,
    kind: str,
    owner: str,
    records: list[bytes],
    now: int,
    expires_at: int | None,
) -> str | None:
    """Store a batch's output or error file (unless it is empty); returns its id."""
    if not records:
        return None
    content = b"".join(r + b"\n" for r in records)
    file_id = result_file_id(batch_id, kind)
    tx.execute(
        "INSERT INTO batch_files (id, owner, purpose, filename, bytes, created_at, expires_at, "
        "content) VALUES (:id, :owner, 'batch_output', :filename, :bytes, :now, :expires_at, "
        ":content) ON CONFLICT (id) DO NOTHING",
        {
            "id": file_id,
            "owner": owner,
            "filename": f"{batch_id}_{kind}.jsonl",
            "bytes": len(content),
            "now": now,
            "expires_at": expires_at,
            "content": content,
        },
    )
    return file_id

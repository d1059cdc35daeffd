"""Stored Responses API responses: what `previous_response_id` and `GET /v1/responses/{id}` read.

A stored response is the Response object the client got, the input items it was generated from
(the replayed conversation first, then the request's own input), the name of the key that
created it and its expiry. Every read is scoped to a key: another key's response does not
exist for it. Past its retention period a response is gone: reads ignore it at once, and
expired rows are deleted now and then by the writes.

The methods are synchronous and may block; the gateway calls them through `asyncio.to_thread`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import msgspec

from tokenway.store.sql import Database, Migration, open_database

__all__ = ["ResponseStore", "StoredResponse"]

MIGRATIONS: list[Migration] = [
    """CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY,
    key_name TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL,
    input_items TEXT NOT NULL,
    response TEXT NOT NULL
)""",
    "CREATE INDEX IF NOT EXISTS responses_expires_at ON responses (expires_at)",
]
_PURGE_EVERY_S = 60.0

_encode = msgspec.json.encode
_decode = msgspec.json.decode


class StoredResponse(msgspec.Struct, kw_only=True):
    id: str
    created_at: float
    expires_at: float
    input_items: list[dict[str, Any]]
    response: dict[str, Any]


class ResponseStore:
    """Responses in the store beside the ledger (SQLite or PostgreSQL), kept `retention_s`."""

    def __init__(
        self, url: str, retention_s: float, clock: Callable[[], float] = time.time
    ) -> None:
        self.db: Database = open_database(url)
        self.retention_s = retention_s
        self.clock = clock
        self._ready = False
        self._lock = threading.Lock()
        self._purged_at = 0.0

    def _migrated(self) -> Database:
        if not self._ready:
            with self._lock:
                if not self._ready:
                    self.db.migrate("responses", MIGRATIONS)
                    self._ready = True
        return self.db

    def save(self, key: str, response: dict[str, Any], input_items: list[dict[str, Any]]) -> None:
        """Store (or replace) `response`, created by key `key`, with its input items."""
        db = self._migrated()
        now = self.clock()
        params = {
            "id": response["id"],
            "key": key,
            "created": now,
            "expires": now + self.retention_s,
            "items": _encode(input_items).decode(),
            "response": _encode(response).decode(),
        }
        with db.transaction() as tx:
            tx.execute("DELETE FROM responses WHERE id = :id", params)
            tx.execute(
                "INSERT INTO responses (id, key_name, created_at, expires_at, input_items, "
                "response) VALUES (:id, :key, :created, :expires, :items, :response)",
                params,
            )
        if now - self._purged_at >= _PURGE_EVERY_S:
            self._purged_at = now
            self.purge()

    def get(self, key: str, response_id: str) -> StoredResponse | None:
        """The response `response_id` if key `key` created it and it has not expired."""
        rows = self._migrated().fetch(
            "SELECT id, created_at, expires_at, input_items, response FROM responses "
            "WHERE id = :id AND key_name = :key AND expires_at > :now",
            {"id": response_id, "key": key, "now": self.clock()},
        )
        if not rows:
            return None
        row = rows[0]
        return StoredResponse(
            id=row["id"],
            created_at=float(row["created_at"]),
            expires_at=float(row["expires_at"]),
            input_items=_decode(row["input_items"]),
            response=_decode(row["response"]),
        )

    def delete(self, key: str, response_id: str) -> bool:
        """Delete key `key`'s response `response_id`; False if there was none to delete."""
        changed = self._migrated().execute(
            "DELETE FROM responses WHERE id = :id AND key_name = :key AND expires_at > :now",
            {"id": response_id, "key": key, "now": self.clock()},
        )
        return changed > 0

    def purge(self) -> int:
        """Delete every expired response; returns how many went."""
        return self._migrated().execute(
            "DELETE FROM responses WHERE expires_at <= :now", {"now": self.clock()}
        )

    def close(self) -> None:
        self.db.close()

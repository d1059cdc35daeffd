"""Keys managed at runtime: stored next to the ledger, with an audit log of every change.

A stored key holds the SHA-256 digest of its secret (the secret itself is shown once, when the
key is created or rotated, and never stored), a display prefix, its limits and budget, an
optional expiry and a revocation time. Every change bumps the store's version; each gateway
replica polls the version and reloads, so a key created on one replica works on all of them
within a second. Config-file keys stay as they are and cannot be changed here.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import time
from typing import Any

import msgspec

from tokenway.accounting import sqlite as db

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS api_keys (
    name TEXT PRIMARY KEY,
    digest TEXT NOT NULL UNIQUE,
    prefix TEXT NOT NULL,
    spec TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION,
    revoked_at DOUBLE PRECISION
)""",
    """CREATE TABLE IF NOT EXISTS audit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts DOUBLE PRECISION NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    key_name TEXT NOT NULL,
    detail TEXT
)""",
)

SECRET_PREFIX = "sk-tw-"


class KeySpec(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """What a stored key may do (the same fields as a config key, minus the secret)."""

    team: str | None = None
    models: list[str] | None = None
    rpm: int | None = None
    tpm: int | None = None
    budget_usd: float | None = None
    budget_period: str = "total"
    budget_hard: bool = True
    end_user_budget_usd: float | None = None
    plan: str | None = None
    regions: list[str] | None = None
    priority: str = "normal"


class StoredKey(msgspec.Struct, kw_only=True):
    name: str
    digest: str
    prefix: str
    spec: KeySpec
    created_at: float
    updated_at: float
    expires_at: float | None = None
    revoked_at: float | None = None

    def active(self, now: float) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)

    def public(self) -> dict[str, Any]:
        """The key as the admin API and CLI show it: never the secret or its digest."""
        return {
            "name": self.name,
            "prefix": self.prefix,
            **msgspec.structs.asdict(self.spec),
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "revoked_at": self.revoked_at,
            "source": "store",
        }


class KeyExists(ValueError):
    pass


class NoSuchKey(KeyError):
    pass


def digest_hex(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


class SqliteKeyStore:
    """The key store in the ledger's SQLite database (its own tables)."""

    def __init__(self, url: str) -> None:
        self.target = db.parse_url(url)

    def _conn(self) -> sqlite3.Connection:
        conn = db.connect_writer(self.target)
        conn.execute(f"PRAGMA busy_timeout={db.BUSY_TIMEOUT_MS}")
        for ddl in SCHEMA:
            conn.execute(ddl)
        return conn

    def version(self) -> float:
        """The time of the latest change (0 for an empty store)."""
        conn = self._conn()
        try:
            (v,) = conn.execute("SELECT COALESCE(MAX(updated_at), 0) FROM api_keys").fetchone()
            return float(v)
        finally:
            conn.close()

    def load(self) -> list[StoredKey]:
        conn = self._conn()
        try:
            rows = conn.execute(
                "SELECT name, digest, prefix, spec, created_at, updated_at, expires_at, "
                "revoked_at FROM api_keys ORDER BY name"
            ).fetchall()
        finally:
            conn.close()
        return [
            StoredKey(
                name=r[0],
                digest=r[1],
                prefix=r[2],
                spec=msgspec.json.decode(r[3], type=KeySpec),
                created_at=r[4],
                updated_at=r[5],
                expires_at=r[6],
                revoked_at=r[7],
            )
            for r in rows
        ]

    def create(
        self, name: str, spec: KeySpec, actor: str, expires_at: float | None = None
    ) -> tuple[StoredKey, str]:
        """A new key and its secret (shown once)."""
        secret = new_secret()
        now = time.time()
        key = StoredKey(
            name=name,
            digest=digest_hex(secret),
            prefix=secret[: len(SECRET_PREFIX) + 4],
            spec=spec,
            created_at=now,
            updated_at=now,
            expires_at=expires_at,
        )
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(
                    "INSERT INTO api_keys (name, digest, prefix, spec, created_at, updated_at, "
                    "expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        name,
                        key.digest,
                        key.prefix,
                        msgspec.json.encode(spec).decode(),
                        now,
                        now,
                        expires_at,
                    ),
                )
            except sqlite3.IntegrityError:
                conn.execute("ROLLBACK")
                raise KeyExists(f"a key named {name!r} exists already") from None
            self._audit(conn, actor, "create", name, {"expires_at": expires_at})
            conn.execute("COMMIT")
        finally:
            conn.close()
        return key, secret

    def rotate(self, name: str, actor: str) -> str:
        """A new secret for `name`; the old one stops working."""
        secret = new_secret()
        self._change(
            name,
            actor,
            "rotate",
            "digest = ?, prefix = ?",
            (digest_hex(secret), secret[: len(SECRET_PREFIX) + 4]),
        )
        return secret

    def revoke(self, name: str, actor: str) -> None:
        self._change(name, actor, "revoke", "revoked_at = ?", (time.time(),))

    def update(self, name: str, spec: KeySpec, actor: str) -> None:
        """Replace a key's limits, budget and the rest of its spec."""
        self._change(
            name,
            actor,
            "update",
            "spec = ?",
            (msgspec.json.encode(spec).decode(),),
            detail=msgspec.structs.asdict(spec),
        )

    def audit(self) -> list[dict[str, Any]]:
        conn = self._conn()
        try:
            rows = conn.execute(
                "SELECT ts, actor, action, key_name, detail FROM audit_log ORDER BY id"
            ).fetchall()
        finally:
            conn.close()
        return [
            {
                "ts": r[0],
                "actor": r[1],
                "action": r[2],
                "key": r[3],
                "detail": json.loads(r[4]) if r[4] else None,
            }
            for r in rows
        ]

    def _change(
        self,
        name: str,
        actor: str,
        action: str,
        assignments: str,
        params: tuple[Any, ...],
        detail: dict[str, Any] | None = None,
    ) -> None:
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
            cur = conn.execute(
                f"UPDATE api_keys SET {assignments}, updated_at = ? WHERE name = ?",
                (*params, time.time(), name),
            )
            if cur.rowcount == 0:
                conn.execute("ROLLBACK")
                raise NoSuchKey(name)
            self._audit(conn, actor, action, name, detail)
            conn.execute("COMMIT")
        finally:
            conn.close()

    @staticmethod
    def _audit(
        conn: sqlite3.Connection,
        actor: str,
        action: str,
        name: str,
        detail: dict[str, Any] | None,
    ) -> None:
        conn.execute(
            "INSERT INTO audit_log (ts, actor, action, key_name, detail) VALUES (?, ?, ?, ?, ?)",
            (time.time(), actor, action, name, json.dumps(detail) if detail else None),
        )


def open_key_store(ledger_url: str) -> SqliteKeyStore | None:
    """The key store next to the ledger, or None where none is implemented yet."""
    if ledger_url.startswith(("sqlite://", "memory://")):
        return SqliteKeyStore(ledger_url)
    return None

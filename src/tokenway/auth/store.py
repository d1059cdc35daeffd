"""Keys managed at runtime: stored next to the ledger, with an audit log of every change.

A stored key holds the SHA-256 digest of its secret (the secret itself is shown once, when the
key is created or rotated, and never stored), a display prefix, its limits and budget, an
optional expiry and a revocation time. The keys live in the ledger's database through the
`tokenway.store` SQL interface: a SQLite file for one machine, a PostgreSQL schema shared by
every replica. Every change bumps a version counter in the same transaction; each gateway
replica polls the version and reloads, so a key created on one replica works on all of them
within a second. Config-file keys stay as they are and cannot be changed here.

A store that cannot be reached raises `tokenway.store.StoreUnavailable` from any method.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import msgspec

from tokenway.store import Database, Migration, Tx, open_database

__all__ = [
    "MIGRATIONS",
    "SECRET_PREFIX",
    "KeyExists",
    "KeySpec",
    "NoSuchKey",
    "SqlKeyStore",
    "StoredKey",
    "digest_hex",
    "new_secret",
    "open_key_store",
]

# The first two are the tables the SQLite-only key store of earlier releases created without
# recording a migration: IF NOT EXISTS adopts them, rows and all.
MIGRATIONS: list[Migration] = [
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
    {
        "sqlite": """CREATE TABLE IF NOT EXISTS audit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts DOUBLE PRECISION NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    key_name TEXT NOT NULL,
    detail TEXT
)""",
        "postgres": """CREATE TABLE IF NOT EXISTS audit_log (
    id BIGSERIAL PRIMARY KEY,
    ts DOUBLE PRECISION NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    key_name TEXT NOT NULL,
    detail TEXT
)""",
    },
    # A counter rather than MAX(updated_at): replicas' clocks differ, and a change stamped
    # earlier than the newest one would go unseen; the counter moves in commit order.
    "CREATE TABLE IF NOT EXISTS api_keys_version (id INTEGER PRIMARY KEY, version BIGINT NOT NULL)",
    "INSERT INTO api_keys_version (id, version) SELECT 1, 0 "
    "WHERE NOT EXISTS (SELECT 1 FROM api_keys_version WHERE id = 1)",
]

SECRET_PREFIX = "sk-tw-"
_COLUMNS = "name, digest, prefix, spec, created_at, updated_at, expires_at, revoked_at"


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


def _prefix(secret: str) -> str:
    return secret[: len(SECRET_PREFIX) + 4]


class SqlKeyStore:
    """The key store in the ledger's database (SQLite or PostgreSQL), in tables of its own.

    Methods are synchronous and may block (the gateway calls them through
    `asyncio.to_thread`); they run one at a time, so that `close` waits for the one in flight.
    """

    def __init__(self, url: str) -> None:
        self.db: Database = open_database(url)
        self._lock = threading.RLock()
        self._migrated = False

    @contextmanager
    def _ready(self) -> Iterator[Database]:
        with self._lock:
            if not self._migrated:
                self.db.migrate("keys", MIGRATIONS)
                self._migrated = True
            yield self.db

    def version(self) -> int:
        """A counter that every change moves on (0 for a store never changed)."""
        with self._ready() as db:
            rows = db.fetch("SELECT version FROM api_keys_version WHERE id = 1")
        return int(rows[0]["version"]) if rows else 0

    def load(self) -> list[StoredKey]:
        """Every stored key, revoked and expired ones included, by name."""
        with self._ready() as db:
            rows = db.fetch(f"SELECT {_COLUMNS} FROM api_keys")
        keys = [
            StoredKey(
                name=r["name"],
                digest=r["digest"],
                prefix=r["prefix"],
                spec=msgspec.json.decode(r["spec"], type=KeySpec),
                created_at=r["created_at"],
                updated_at=r["updated_at"],
                expires_at=r["expires_at"],
                revoked_at=r["revoked_at"],
            )
            for r in rows
        ]
        # sorted here: the two engines' collations order names differently
        return sorted(keys, key=lambda k: k.name)

    def create(
        self, name: str, spec: KeySpec, actor: str, expires_at: float | None = None
    ) -> tuple[StoredKey, str]:
        """A new key and its secret (shown once); `KeyExists` if the name is taken."""
        secret = new_secret()
        now = time.time()
        key = StoredKey(
            name=name,
            digest=digest_hex(secret),
            prefix=_prefix(secret),
            spec=spec,
            created_at=now,
            updated_at=now,
            expires_at=expires_at,
        )
        with self._ready() as db, db.transaction() as tx:
            added = tx.execute(
                f"INSERT INTO api_keys ({_COLUMNS}) VALUES (:name, :digest, :prefix, :spec, "
                ":now, :now, :expires, NULL) ON CONFLICT (name) DO NOTHING",
                {
                    "name": name,
                    "digest": key.digest,
                    "prefix": key.prefix,
                    "spec": msgspec.json.encode(spec).decode(),
                    "now": now,
                    "expires": expires_at,
                },
            )
            if added == 0:
                raise KeyExists(f"a key named {name!r} exists already")
            _record(tx, actor, "create", name, {"expires_at": expires_at})
        return key, secret

    def rotate(self, name: str, actor: str) -> str:
        """A new secret for `name`; the old one stops working."""
        secret = new_secret()
        self._change(
            name,
            actor,
            "rotate",
            "digest = :digest, prefix = :prefix",
            {"digest": digest_hex(secret), "prefix": _prefix(secret)},
        )
        return secret

    def revoke(self, name: str, actor: str) -> None:
        """Stop `name` working, for good; `NoSuchKey` if there is no such stored key."""
        self._change(name, actor, "revoke", "revoked_at = :revoked", {"revoked": time.time()})

    def update(self, name: str, spec: KeySpec, actor: str) -> None:
        """Replace a key's limits, budget and the rest of its spec."""
        self._change(
            name,
            actor,
            "update",
            "spec = :spec",
            {"spec": msgspec.json.encode(spec).decode()},
            detail=msgspec.structs.asdict(spec),
        )

    def audit(self) -> list[dict[str, Any]]:
        """Every change, oldest first: when, who, what, which key (never a secret)."""
        with self._ready() as db:
            rows = db.fetch("SELECT ts, actor, action, key_name, detail FROM audit_log ORDER BY id")
        return [
            {
                "ts": r["ts"],
                "actor": r["actor"],
                "action": r["action"],
                "key": r["key_name"],
                "detail": json.loads(r["detail"]) if r["detail"] else None,
            }
            for r in rows
        ]

    def close(self) -> None:
        """Release the connections, after the call in flight (if any) has finished."""
        with self._lock:
            self.db.close()

    def _change(
        self,
        name: str,
        actor: str,
        action: str,
        assignments: str,
        params: dict[str, Any],
        detail: dict[str, Any] | None = None,
    ) -> None:
        with self._ready() as db, db.transaction() as tx:
            changed = tx.execute(
                f"UPDATE api_keys SET {assignments}, updated_at = :now WHERE name = :name",
                {**params, "now": time.time(), "name": name},
            )
            if changed == 0:
                raise NoSuchKey(name)
            _record(tx, actor, action, name, detail)


def _record(tx: Tx, actor: str, action: str, name: str, detail: dict[str, Any] | None) -> None:
    """The audit row and the version bump that go with every change, in its transaction."""
    tx.execute(
        "INSERT INTO audit_log (ts, actor, action, key_name, detail) "
        "VALUES (:ts, :actor, :action, :name, :detail)",
        {
            "ts": time.time(),
            "actor": actor,
            "action": action,
            "name": name,
            "detail": json.dumps(detail) if detail else None,
        },
    )
    tx.execute("UPDATE api_keys_version SET version = version + 1 WHERE id = 1")


def open_key_store(ledger_url: str) -> SqlKeyStore:
    """The key store beside the ledger at `ledger_url` (SQLite, memory:// or PostgreSQL).
    Nothing is connected until the first call; a malformed URL raises ValueError."""
    return SqlKeyStore(ledger_url)

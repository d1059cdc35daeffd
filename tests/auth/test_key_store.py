"""The runtime key store behaves the same on SQLite and PostgreSQL: digests only, every change
audited and counted, replicas see each other's changes, and a SQLite database written by the
SQLite-only key store of earlier releases is adopted as it is."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from tokenway.auth.store import (
    SECRET_PREFIX,
    KeyExists,
    KeySpec,
    NoSuchKey,
    StoredKey,
    digest_hex,
    open_key_store,
)
from tokenway.store import StoreUnavailable


def test_create_rotate_update_revoke_each_audited_and_versioned(ledger_url: str) -> None:
    store = open_key_store(ledger_url)
    try:
        versions = [store.version()]
        key, secret = store.create("svc", KeySpec(models=["m"], rpm=5), "tester")
        versions.append(store.version())
        assert secret.startswith(SECRET_PREFIX) and key.prefix == secret[: len(SECRET_PREFIX) + 4]
        assert key.digest == digest_hex(secret)
        assert store.load() == [key]
        with pytest.raises(KeyExists):
            store.create("svc", KeySpec(), "tester")
        assert store.version() == versions[-1]  # a refused change changes nothing

        new = store.rotate("svc", "tester")
        versions.append(store.version())
        (rotated,) = store.load()
        assert rotated.digest == digest_hex(new) != key.digest
        assert rotated.prefix == new[: len(SECRET_PREFIX) + 4]

        store.update("svc", KeySpec(models=["other"], budget_usd=2.5), "tester")
        versions.append(store.version())
        (updated,) = store.load()
        assert updated.spec == KeySpec(models=["other"], budget_usd=2.5)
        assert updated.active(updated.updated_at)

        store.revoke("svc", "tester")
        versions.append(store.version())
        (revoked,) = store.load()
        assert revoked.revoked_at is not None and not revoked.active(revoked.revoked_at)

        for change in (
            lambda: store.rotate("nobody", "tester"),
            lambda: store.update("nobody", KeySpec(), "tester"),
            lambda: store.revoke("nobody", "tester"),
        ):
            with pytest.raises(NoSuchKey):
                change()
        assert store.version() == versions[-1]
        assert versions == sorted(set(versions)), versions

        audit = store.audit()
        assert [(e["action"], e["key"], e["actor"]) for e in audit] == [
            ("create", "svc", "tester"),
            ("rotate", "svc", "tester"),
            ("update", "svc", "tester"),
            ("revoke", "svc", "tester"),
        ]
        assert audit[2]["detail"]["budget_usd"] == 2.5
        text = str(audit) + str([k.public() for k in store.load()])
        for leak in (secret, new, key.digest, rotated.digest):
            assert leak not in text
    finally:
        store.close()


def test_expiry_is_stored_and_ends_the_key(ledger_url: str) -> None:
    store = open_key_store(ledger_url)
    try:
        key, _ = store.create("brief", KeySpec(), "tester", expires_at=1_000.0)
        assert store.load()[0].expires_at == 1_000.0
        assert store.audit()[0]["detail"] == {"expires_at": 1_000.0}
        assert key.active(999.0) and not key.active(1_000.0)
    finally:
        store.close()


def test_a_change_through_one_replica_is_seen_by_another(ledger_url: str) -> None:
    a, b = open_key_store(ledger_url), open_key_store(ledger_url)
    try:
        seen = b.version()
        assert b.load() == []
        a.create("x", KeySpec(priority="high"), "replica-a")
        assert b.version() != seen
        assert [(k.name, k.spec.priority) for k in b.load()] == [("x", "high")]
        seen = b.version()
        a.revoke("x", "replica-a")
        assert b.version() != seen and b.load()[0].revoked_at is not None
    finally:
        a.close()
        b.close()


def test_concurrent_changes_from_two_replicas_each_move_the_version(ledger_url: str) -> None:
    """Every change moves the version exactly once, whichever replica made it and however
    their transactions interleave, so no replica's poll can miss one."""
    stores = [open_key_store(ledger_url), open_key_store(ledger_url)]
    start = stores[0].version()
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for n in range(12):
                stores[i].create(f"k{i}-{n:02}", KeySpec(), f"replica-{i}")
                if n % 3 == 0:
                    stores[i].revoke(f"k{i}-{n:02}", f"replica-{i}")
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    try:
        assert errors == []
        changes = 2 * (12 + 4)
        assert stores[1].version() == start + changes
        assert len(stores[0].audit()) == changes
        assert len(stores[1].load()) == 24
    finally:
        for s in stores:
            s.close()


# The tables exactly as the SQLite-only key store of the previous release created them.
_OLD_SCHEMA = (
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


def test_a_database_of_the_sqlite_only_key_store_is_adopted(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    secret = SECRET_PREFIX + "old-secret-value"
    conn = sqlite3.connect(path)
    for ddl in _OLD_SCHEMA:
        conn.execute(ddl)
    conn.execute(
        "INSERT INTO api_keys VALUES ('legacy', ?, ?, '{\"rpm\": 7}', 10.0, 20.0, NULL, NULL)",
        (digest_hex(secret), secret[:10]),
    )
    conn.execute(
        "INSERT INTO audit_log (ts, actor, action, key_name, detail) "
        "VALUES (10.0, 'cli:ops', 'create', 'legacy', NULL)"
    )
    conn.commit()
    conn.close()

    url = f"sqlite:///{path}"
    store = open_key_store(url)
    try:
        assert store.load() == [
            StoredKey(
                name="legacy",
                digest=digest_hex(secret),
                prefix=secret[:10],
                spec=KeySpec(rpm=7),
                created_at=10.0,
                updated_at=20.0,
            )
        ]
        before = store.version()
        store.revoke("legacy", "tester")
        assert store.version() > before
        assert [e["action"] for e in store.audit()] == ["create", "revoke"]
    finally:
        store.close()
    again = open_key_store(url)  # the migrations ran once; a second start finds them done
    try:
        assert again.load()[0].revoked_at is not None
        assert [e["actor"] for e in again.audit()] == ["cli:ops", "tester"]
    finally:
        again.close()


def test_an_unreachable_server_raises_store_unavailable() -> None:
    store = open_key_store("postgresql://nobody@127.0.0.1:9/none?schema=keys")
    try:
        for call in (
            store.version,
            store.load,
            store.audit,
            lambda: store.create("x", KeySpec(), "tester"),
            lambda: store.revoke("x", "tester"),
        ):
            with pytest.raises(StoreUnavailable):
                call()
    finally:
        store.close()

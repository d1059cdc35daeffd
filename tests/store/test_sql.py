"""The store's SQL interface behaves the same on SQLite and PostgreSQL."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenway.accounting.sqlite import SchemaTooNew
from tokenway.store import StoreUnavailable, open_database
from tokenway.store.sql import _positional

JOBS = [
    "CREATE TABLE jobs (id TEXT PRIMARY KEY, state TEXT NOT NULL, owner TEXT, n BIGINT NOT NULL)",
    {
        "sqlite": "CREATE INDEX jobs_state ON jobs (state)",
        "postgres": "CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state)",
    },
]


def test_migrations_run_once_and_a_newer_schema_is_refused(ledger_url: str) -> None:
    db = open_database(ledger_url)
    try:
        assert db.migrate("jobs", JOBS) == [1, 2]
        assert db.migrate("jobs", JOBS) == []
        assert db.migrate("jobs", [*JOBS, "ALTER TABLE jobs ADD COLUMN note TEXT"]) == [3]
        with pytest.raises(SchemaTooNew):
            db.migrate("jobs", JOBS)
        # components are versioned apart
        assert db.migrate("other", ["CREATE TABLE other (x TEXT)"]) == [1]
    finally:
        db.close()


def test_named_parameters_round_trip_and_rowcounts(ledger_url: str) -> None:
    db = open_database(ledger_url)
    try:
        db.migrate("jobs", JOBS)
        for i in range(5):
            assert (
                db.execute(
                    "INSERT INTO jobs (id, state, n) VALUES (:id, 'queued', :n)",
                    {"id": f"j{i}", "n": i},
                )
                == 1
            )
        assert db.execute("UPDATE jobs SET n = n + :d WHERE n >= :lo", {"d": 10, "lo": 3}) == 2
        rows = db.fetch("SELECT id, n FROM jobs WHERE state = :s ORDER BY id", {"s": "queued"})
        assert rows == [
            {"id": "j0", "n": 0},
            {"id": "j1", "n": 1},
            {"id": "j2", "n": 2},
            {"id": "j3", "n": 13},
            {"id": "j4", "n": 14},
        ]
        with pytest.raises(KeyError if db.dialect == "postgres" else Exception):
            db.fetch("SELECT id FROM jobs WHERE id = :missing", {})
    finally:
        db.close()


def test_a_failed_transaction_leaves_nothing(ledger_url: str) -> None:
    db = open_database(ledger_url)
    try:
        db.migrate("jobs", JOBS)
        with pytest.raises(RuntimeError), db.transaction() as tx:
            tx.execute("INSERT INTO jobs (id, state, n) VALUES ('a', 'queued', 1)")
            raise RuntimeError("abort")
        assert db.fetch("SELECT id FROM jobs") == []
        with db.transaction() as tx:
            tx.execute("INSERT INTO jobs (id, state, n) VALUES ('a', 'queued', 1)")
        assert db.fetch("SELECT id FROM jobs") == [{"id": "a"}]
    finally:
        db.close()


def test_claims_with_returning_hand_each_row_to_one_claimant(ledger_url: str) -> None:
    """Two stores (as two replicas would have) claim jobs concurrently: none is claimed twice."""
    setup = open_database(ledger_url)
    setup.migrate("jobs", JOBS)
    with setup.transaction() as tx:
        for i in range(60):
            tx.execute(
                "INSERT INTO jobs (id, state, n) VALUES (:id, 'queued', 0)", {"id": f"{i:03}"}
            )
    setup.close()
    claimed: dict[str, list[str]] = {"a": [], "b": []}

    def claim(owner: str) -> None:
        db = open_database(ledger_url)
        try:
            while True:
                with db.transaction() as tx:
                    rows = tx.fetch(
                        "UPDATE jobs SET state = 'running', owner = :o WHERE id = "
                        "(SELECT id FROM jobs WHERE state = 'queued' ORDER BY id LIMIT 1) "
                        "AND state = 'queued' RETURNING id",
                        {"o": owner},
                    )
                if not rows:
                    if not db.fetch("SELECT id FROM jobs WHERE state = 'queued' LIMIT 1"):
                        return
                    continue
                claimed[owner].append(rows[0]["id"])
        finally:
            db.close()

    threads = [threading.Thread(target=claim, args=(o,)) for o in claimed]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    everything = claimed["a"] + claimed["b"]
    assert sorted(everything) == [f"{i:03}" for i in range(60)]


def test_an_unreachable_server_raises_store_unavailable_quickly() -> None:
    db = open_database("postgresql://nobody@127.0.0.1:9/none?schema=s")
    try:
        with pytest.raises(StoreUnavailable):
            db.fetch("SELECT 1")
        with pytest.raises(StoreUnavailable):
            db.execute("SELECT 1")
    finally:
        db.close()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.from_regex(r"[a-z_][a-z0-9_]{0,6}", fullmatch=True), min_size=1, max_size=6))
def test_placeholders_number_each_name_once_and_keep_casts(names: list[str]) -> None:
    sql = "SELECT " + ", ".join(f":{n}::text" for n in names) + " WHERE x = 'a::b'"
    text, order = _positional(sql)
    assert list(order) == list(dict.fromkeys(names))
    for n in names:
        assert f"${order.index(n) + 1}::text" in text
    assert "'a::b'" in text and ":" + names[0] + "::" not in text

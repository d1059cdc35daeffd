"""The hand-off's leases and upstream ids behave the same on SQLite and PostgreSQL: one
replica holds a batch at a time, the ids survive for whoever takes it over, and the lines'
first-send stamp stays put across resumptions."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tokenway.batch.handoff_store import HandoffStore
from tokenway.batch.store import JobStore
from tokenway.store import open_database

from .test_store import NOW, _batch


@pytest.fixture
def store(ledger_url: str) -> Iterator[JobStore]:
    s = JobStore(open_database(ledger_url))
    s.ensure()
    yield s
    s.close()


def test_one_replica_holds_a_hand_off_and_the_next_resumes_it(store: JobStore) -> None:
    _batch(store, "batch_h", 3)
    leases = HandoffStore(store.db)
    first = leases.claim("batch_h", "r1", NOW, NOW + 60)
    assert first is not None and first["upstream_batch_id"] is None
    assert leases.claim("batch_h", "r2", NOW + 1, NOW + 61) is None
    lines = leases.queued("batch_h", NOW)
    assert [r["custom_id"] for r in lines] == ["c0", "c1", "c2"]
    assert {r["first_sent"] for r in lines} == {NOW}
    assert leases.save("batch_h", "r1", "file-up", None)
    assert leases.save("batch_h", "r1", "file-up", "batch_up")
    assert not leases.save("batch_h", "r2", "file-other", "batch_other")
    assert leases.held("batch_h", "r1") is not None and leases.held("batch_h", "r2") is None
    # r1 dies: its lease lapses and r2 takes over the same upstream batch
    again = leases.claim("batch_h", "r2", NOW + 120, NOW + 180)
    assert again is not None
    assert (again["upstream_file_id"], again["upstream_batch_id"]) == ("file-up", "batch_up")
    assert again["upstream_state"] == "running"
    assert {r["first_sent"] for r in leases.queued("batch_h", NOW + 120)} == {NOW}
    leases.release("batch_h", "r2", None)
    assert store.active_batches(int(NOW))[0]["upstream_state"] == "running"
    assert leases.claim("batch_h", "r3", NOW + 121, NOW + 181) is not None
    leases.release("batch_h", "r3", "fallback")
    assert store.active_batches(int(NOW))[0]["upstream_state"] == "fallback"
    assert leases.claim("batch_h", "r4", NOW + 122, NOW + 182) is None

"""The job store's claims, leases, results and endings behave the same on SQLite and
PostgreSQL, with several replicas (owners) at once."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import msgspec
import pytest

from tokenway.batch.store import JobStore
from tokenway.batch.validate import Request
from tokenway.domain.types import Principal
from tokenway.store import open_database

NOW = 1_000_000.0


@pytest.fixture
def store(ledger_url: str) -> Iterator[JobStore]:
    s = JobStore(open_database(ledger_url))
    s.ensure()
    yield s
    s.close()


def _batch(store: JobStore, batch_id: str, n: int) -> None:
    store.create_batch(
        {
            "id": batch_id,
            "owner": "app",
            "principal": msgspec.json.encode(Principal(name="app")).decode(),
            "endpoint": "/v1/chat/completions",
            "input_file_id": "file-x",
            "completion_window": "24h",
            "metadata": None,
            "output_expires_s": None,
            "created_at": int(NOW),
            "expires_at": int(NOW) + 86400,
        }
    )
    claimed = store.claim_validation("v", NOW, NOW + 60)
    assert claimed is not None and claimed[0]["id"] == batch_id and claimed[1] is None
    requests = [Request(i + 1, f"c{i}", b'{"model":"m"}') for i in range(n)]
    assert store.start_batch(batch_id, "v", "m", requests, int(NOW))


def test_two_replicas_claim_each_line_once(store: JobStore, ledger_url: str) -> None:
    _batch(store, "batch_a", 450)
    got: dict[str, list[int]] = {"r1": [], "r2": []}

    def work(owner: str) -> None:
        mine = JobStore(open_database(ledger_url))
        try:
            while claimed := mine.lines.claim("batch_a", owner, 7, NOW, NOW + 60, int(NOW)):
                got[owner].extend(c.line for c in claimed)
        finally:
            mine.close()

    threads = [threading.Thread(target=work, args=(o,)) for o in got]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(got["r1"] + got["r2"]) == list(range(1, 451))


def test_a_lapsed_lease_moves_a_sent_line_to_another_replica(store: JobStore) -> None:
    _batch(store, "batch_b", 2)
    lines = store.lines
    (first, _) = lines.claim("batch_b", "dead", 2, NOW, NOW + 5, int(NOW))
    assert first.sends == 0 and first.first_sent is None
    assert not lines.mark_sent("batch_b", 1, "someone-else", NOW, 10, "p/m")
    assert lines.mark_sent("batch_b", 1, "dead", NOW + 1, 42, "openai/gpt")
    assert lines.claim("batch_b", "live", 2, NOW + 2, NOW + 60, int(NOW)) == []  # held, lease live
    assert lines.reap(NOW + 6) == 2  # both leases lapsed
    (again, _) = lines.claim("batch_b", "live", 2, NOW + 6, NOW + 60, int(NOW))
    assert (again.line, again.sends, again.prompt_tokens, again.target) == (1, 1, 42, "openai/gpt")
    assert again.first_sent == NOW + 1
    assert lines.mark_sent("batch_b", 1, "live", NOW + 7, 42, "openai/gpt")
    # the dead replica's late result gives way to the replica that holds the line now
    finish = {"ok": True, "status": 200, "response": "{}", "row": None, "now": NOW + 8}
    assert not lines.finish("batch_b", 1, "dead", **finish)
    assert lines.finish("batch_b", 1, "live", **{**finish, "row": '{"r": 1}'})
    assert not lines.finish("batch_b", 1, "live", **finish)  # one result per line
    row = store.get_batch("app", "batch_b")
    assert row is not None and (row["completed"], row["failed"]) == (1, 0)
    assert [r["line"] for r in lines.unledgered("batch_b")] == [1]
    lines.mark_ledgered([("batch_b", 1)])
    assert lines.unledgered("batch_b") == []


def test_a_refused_line_is_unsent_and_waits(store: JobStore) -> None:
    _batch(store, "batch_c", 1)
    lines = store.lines
    (line,) = lines.claim("batch_c", "r", 1, NOW, NOW + 60, int(NOW))
    assert lines.mark_sent("batch_c", 1, "r", NOW, 5, "p/m")
    lines.release("batch_c", 1, "r", NOW + 30, unsend=True)
    assert lines.claim("batch_c", "r", 1, NOW + 10, NOW + 60, int(NOW)) == []  # not before NOW + 30
    (line,) = lines.claim("batch_c", "r", 1, NOW + 30, NOW + 90, int(NOW))
    assert line.sends == 0


def test_ending_a_batch_twice_writes_one_set_of_files(store: JobStore) -> None:
    _batch(store, "batch_d", 3)
    lines = store.lines
    lines.claim("batch_d", "r", 3, NOW, NOW + 60, int(NOW))
    for n, ok in ((1, True), (2, False), (3, True)):
        body = json.dumps({"n": n}) if ok else json.dumps({"error": {"message": "x"}})
        assert lines.finish(
            "batch_d", n, "r", ok=ok, status=200 if ok else 400, response=body, row=None, now=NOW
        )
    assert store.finalizable(NOW, int(NOW)) == [("batch_d", "completed")]
    assert store.claim_finalize("batch_d", "completed", "f1", NOW, NOW + 5, int(NOW))
    assert store.claim_finalize("batch_d", "completed", "f2", NOW, NOW + 5, int(NOW)) is None
    # f1 dies before it ends the batch; f2 takes over once the lease lapses
    assert store.claim_finalize("batch_d", "completed", "f2", NOW + 6, NOW + 60, int(NOW))
    assert not store.end_batch("batch_d", "completed", "f1", int(NOW))
    assert store.end_batch("batch_d", "completed", "f2", int(NOW) + 7)
    row = store.get_batch("app", "batch_d")
    assert row is not None and row["status"] == "completed"
    assert (row["completed"], row["failed"], row["completed_at"]) == (2, 1, int(NOW) + 7)
    out = store.file_content("app", row["output_file_id"], int(NOW))
    err = store.file_content("app", row["error_file_id"], int(NOW))
    assert out is not None and err is not None
    assert [json.loads(x)["custom_id"] for x in out.splitlines()] == ["c0", "c2"]
    assert [json.loads(x)["response"]["status_code"] for x in err.splitlines()] == [400]
    assert store.file_content("other", row["output_file_id"], int(NOW)) is None
    assert store.finalizable(NOW + 100, int(NOW) + 100) == []


def test_an_expired_batch_reports_its_unrun_lines(store: JobStore) -> None:
    _batch(store, "batch_e", 2)
    store.lines.claim("batch_e", "r", 1, NOW, NOW + 5, int(NOW))
    store.lines.finish("batch_e", 1, "r", ok=True, status=200, response="{}", row=None, now=NOW)
    later = NOW + 86400
    assert store.lines.claim("batch_e", "r", 1, later, later + 5, int(later)) == []
    assert store.finalizable(later, int(later)) == [("batch_e", "expired")]
    assert store.claim_finalize("batch_e", "expired", "f", later, later + 60, int(later))
    assert store.end_batch("batch_e", "expired", "f", int(later))
    row = store.get_batch("app", "batch_e")
    assert row is not None and row["status"] == "expired" and row["expired_at"] == int(later)
    err = store.file_content("app", row["error_file_id"], int(later))
    assert err is not None
    (record,) = [json.loads(x) for x in err.splitlines()]
    assert record["custom_id"] == "c1" and record["response"] is None
    assert record["error"]["code"] == "batch_expired"


def test_the_lines_of_a_batch_ended_long_ago_are_purged(store: JobStore) -> None:
    _batch(store, "batch_f", 1)
    store.lines.claim("batch_f", "r", 1, NOW, NOW + 5, int(NOW))
    store.lines.finish("batch_f", 1, "r", ok=True, status=200, response="{}", row=None, now=NOW)
    assert store.claim_finalize("batch_f", "completed", "f", NOW, NOW + 5, int(NOW))
    assert store.end_batch("batch_f", "completed", "f", int(NOW))
    assert store.purge_lines(int(NOW)) == 0  # ended just now: kept
    assert store.purge_lines(int(NOW) + 1) == 1
    row = store.get_batch("app", "batch_f")
    assert row is not None and row["status"] == "completed" and row["completed"] == 1

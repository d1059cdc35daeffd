"""The response store on SQLite and PostgreSQL: scoping by key, replacement, deletion, retention."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tokenway.store.responses import ResponseStore

DAY = 86400.0


class Clock:
    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(ledger_url: str, clock: Clock) -> Iterator[ResponseStore]:
    s = ResponseStore(ledger_url, 30 * DAY, clock=clock)
    yield s
    s.close()


def resp(rid: str, text: str = "hello") -> dict[str, object]:
    return {"id": rid, "object": "response", "status": "completed", "output": [{"text": text}]}


ITEMS = [{"id": "msg_1", "type": "message", "role": "user", "content": [{"text": "héllo ✓"}]}]


def test_save_get_round_trip(store: ResponseStore) -> None:
    store.save("app", resp("resp_1"), ITEMS)
    got = store.get("app", "resp_1")
    assert got is not None
    assert got.response == resp("resp_1") and got.input_items == ITEMS
    assert got.expires_at - got.created_at == 30 * DAY


def test_scoped_to_the_creating_key(store: ResponseStore) -> None:
    store.save("app", resp("resp_1"), ITEMS)
    assert store.get("other", "resp_1") is None
    assert store.delete("other", "resp_1") is False
    assert store.get("app", "resp_1") is not None


def test_save_replaces(store: ResponseStore) -> None:
    store.save("app", resp("resp_1", "a"), ITEMS)
    store.save("app", resp("resp_1", "b"), [])
    got = store.get("app", "resp_1")
    assert got is not None and got.response["output"] == [{"text": "b"}]
    assert got.input_items == []


def test_delete(store: ResponseStore) -> None:
    store.save("app", resp("resp_1"), ITEMS)
    assert store.delete("app", "resp_1") is True
    assert store.get("app", "resp_1") is None
    assert store.delete("app", "resp_1") is False


def test_retention(store: ResponseStore, clock: Clock) -> None:
    store.save("app", resp("resp_old"), ITEMS)
    clock.t += 20 * DAY
    store.save("app", resp("resp_new"), ITEMS)
    clock.t += 10 * DAY + 1
    assert store.get("app", "resp_old") is None  # past its 30 days, though still a row
    assert store.delete("app", "resp_old") is False
    assert store.get("app", "resp_new") is not None
    assert store.purge() == 1
    assert store.purge() == 0
    clock.t += 20 * DAY
    assert store.get("app", "resp_new") is None


def test_writes_purge_expired_rows(store: ResponseStore, clock: Clock) -> None:
    store.save("app", resp("resp_old"), ITEMS)
    clock.t += 31 * DAY
    store.save("app", resp("resp_new"), ITEMS)  # the first write in a while purges
    assert store.purge() == 0


def test_two_processes_share_the_store(ledger_url: str, clock: Clock) -> None:
    a = ResponseStore(ledger_url, 30 * DAY, clock=clock)
    b = ResponseStore(ledger_url, 30 * DAY, clock=clock)
    try:
        a.save("app", resp("resp_1"), ITEMS)
        got = b.get("app", "resp_1")
        assert got is not None and got.input_items == ITEMS
    finally:
        a.close()
        b.close()

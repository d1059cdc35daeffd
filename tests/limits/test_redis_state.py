"""Shared admission state on a real Redis server: exact limits across replicas, budgets that
cannot be overspent by more than one worst case, and the outage policies (on a private server
of this test's own, never the shared one)."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import redis
import redis.asyncio

from tests.net import free_port
from tokenway.config.schema import KeyConfig
from tokenway.domain.types import Principal
from tokenway.errors import BudgetExceeded, RateLimited
from tokenway.limits.budget import BudgetBook, Payer
from tokenway.limits.redis_state import RedisState

SHARED = "redis://127.0.0.1:6379/0"
D = Decimal


def require_redis() -> None:
    try:
        redis.Redis.from_url(SHARED, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:  # .ci/run starts it; a missing server is a failure
        pytest.fail(f"Redis is not running on 127.0.0.1:6379 ({exc}); see .ci/run")


@pytest.fixture
def prefix() -> Iterator[str]:
    require_redis()
    p = f"tokenway-test:{uuid.uuid4().hex}:"
    yield p
    r = redis.Redis.from_url(SHARED)
    for key in r.scan_iter(match=p + "*"):
        r.delete(key)


def book(**kw: object) -> BudgetBook:
    return BudgetBook([KeyConfig(name="k", key="sk-k", **kw)])  # type: ignore[arg-type]


@pytest.fixture
async def replicas(prefix: str) -> AsyncIterator[list[RedisState]]:
    states = [RedisState(SHARED, book(budget_usd=1.0), prefix=prefix) for _ in range(3)]
    for s in states:
        await s.start()
    yield states
    for s in states:
        await s.close()


async def test_rpm_is_exact_across_replicas(replicas: list[RedisState]) -> None:
    p = Principal(name="k", rpm=100)

    async def one(i: int) -> bool:
        try:
            await replicas[i % 3].admit_rate(p, 0)
            return True
        except RateLimited as e:
            assert e.retry_after_s is not None and 0 < e.retry_after_s <= 60
            return False

    admitted = await asyncio.gather(*(one(i) for i in range(300)))
    assert sum(admitted) == 100


async def test_tpm_reserves_then_settles_to_the_actual_count(replicas: list[RedisState]) -> None:
    p = Principal(name="k", tpm=1000)
    room, held = await replicas[0].admit_rate(p, 900)
    assert room.remaining_tokens == 100
    with pytest.raises(RateLimited):
        await replicas[1].admit_rate(p, 200)
    await replicas[0].settle_rate(p, held, 300)  # the request used less than reserved
    room, _ = await replicas[2].admit_rate(p, 200)
    assert room.remaining_tokens == 1000 - 300 - 200


async def test_budget_overspend_across_replicas_stays_within_one_worst_case(
    replicas: list[RedisState],
) -> None:
    worst, actual = D("0.1"), D("0.07")
    spent = D(0)

    async def one(i: int) -> None:
        nonlocal spent
        state = replicas[i % 3]
        try:
            holds = await state.admit_budget(Payer("k"), worst)
        except BudgetExceeded:
            return
        await asyncio.sleep(0.001 * (i % 5))
        spent += actual
        await state.settle_budget(holds, actual)

    for _ in range(10):  # waves of concurrent requests until the budget refuses them all
        before = spent
        await asyncio.gather(*(one(i) for i in range(30)))
        if spent == before:
            break
    assert D(1) - worst < spent <= D(1) + worst
    with pytest.raises(BudgetExceeded, match="Key 'k'"):
        await replicas[0].admit_budget(Payer("k"), worst)


async def test_ledger_spend_is_seeded_once_across_replicas(prefix: str) -> None:
    rows = [{"key": "k", "team": None, "end_user": None, "ts": None, "cost_usd": D("0.95")}]
    states = [RedisState(SHARED, book(budget_usd=1.0), prefix=prefix) for _ in range(2)]
    for s in states:
        await s.start()
        s.seed(rows)
        await s.seed_async()  # the second replica finds the account seeded already
    with pytest.raises(BudgetExceeded):
        await states[1].admit_budget(Payer("k"), D("0.06"))
    assert await states[0].admit_budget(Payer("k"), D("0.04"))
    for s in states:
        await s.close()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes], Path]]:
    exe = shutil.which("redis-server")
    assert exe, "redis-server is needed for the outage tests"
    port = free_port()
    args = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen([*args, "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    for _ in range(100):
        try:
            redis.Redis.from_url(url).ping()
            break
        except redis.RedisError:
            time.sleep(0.05)
    yield url, proc, tmp_path
    proc.kill()
    proc.wait()


async def test_redis_outage_fail_open_uses_a_local_share_and_recovers(
    private_redis: tuple[str, subprocess.Popen[bytes], Path],
) -> None:
    url, proc, _ = private_redis
    state = RedisState(url, book(), timeout_s=0.2, policy="open", share=0.5)
    await state.start()
    p = Principal(name="k", rpm=10)
    for _ in range(3):
        await state.admit_rate(p, 0)
    proc.kill()
    proc.wait()
    t0 = time.perf_counter()
    admitted = 0
    for _ in range(10):
        try:
            await state.admit_rate(p, 0)
            admitted += 1
        except RateLimited:
            pass
    assert time.perf_counter() - t0 < 1.0  # no request waits on a dead server
    assert admitted == 5  # this replica's share of the limit
    assert state.failures >= 1
    await state.close()


async def test_redis_outage_fail_closed_refuses_quickly(
    private_redis: tuple[str, subprocess.Popen[bytes], Path],
) -> None:
    url, proc, _ = private_redis
    state = RedisState(url, book(budget_usd=1.0), timeout_s=0.2, policy="closed")
    await state.start()
    proc.kill()
    proc.wait()
    p = Principal(name="k", rpm=10)
    t0 = time.perf_counter()
    with pytest.raises(RateLimited, match="shared state"):
        await state.admit_rate(p, 0)
    with pytest.raises(RateLimited):
        await state.admit_budget(Payer("k"), D("0.01"))
    assert time.perf_counter() - t0 < 1.0
    await state.close()


async def test_a_settlement_redis_missed_is_applied_once_when_it_returns(
    private_redis: tuple[str, subprocess.Popen[bytes], Path],
) -> None:
    """Redis stops answering (SIGSTOP: its data survives) while a request settles: the
    settlement waits in the replica and lands once when Redis answers again."""
    url, proc, _ = private_redis
    state = RedisState(url, book(budget_usd=1.0), timeout_s=0.2, policy="open")
    await state.start()
    held = [await state.admit_budget(Payer("k"), D("0.3")) for _ in range(2)]
    await state.settle_budget(held[0], D("0.1"))
    await state.settle_budget(held[0], D("0.1"))  # a retried settlement changes nothing more
    proc.send_signal(signal.SIGSTOP)
    try:
        await state.settle_budget(held[1], D("0.2"))  # Redis is not answering: kept, not lost
        assert state.pending_settlements == 1
    finally:
        proc.send_signal(signal.SIGCONT)
    for _ in range(100):
        if state.pending_settlements == 0:
            break
        await asyncio.sleep(0.1)
    assert state.pending_settlements == 0
    client = redis.asyncio.Redis.from_url(url)
    account = held[1].keys[1]
    assert await client.hget(account, "reserved") == b"0"
    assert await client.hget(account, "spent") == b"300000000"  # 0.1 + 0.2, each once
    assert await client.exists(held[0].keys[0], held[1].keys[0]) == 0
    await client.aclose()
    await state.close()


async def test_settling_twice_spends_once(prefix: str) -> None:
    state = RedisState(SHARED, book(budget_usd=1.0), prefix=prefix)
    await state.start()
    hold = await state.admit_budget(Payer("k"), D("0.5"))
    for _ in range(3):
        await state.settle_budget(hold, D("0.25"))
    # had the settlement applied thrice, 0.75 would be spent and 0.3 refused
    assert await state.admit_budget(Payer("k"), D("0.75"))
    with pytest.raises(BudgetExceeded):
        await state.admit_budget(Payer("k"), D("0.01"))
    await state.close()

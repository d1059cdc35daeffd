"""One contract, both backends: the in-process state and the Redis one admit and settle alike."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
import redis

from tokenway.config.schema import KeyConfig, TeamConfig
from tokenway.domain.types import Principal
from tokenway.errors import BudgetExceeded, RateLimited
from tokenway.limits.budget import BudgetBook, Payer
from tokenway.limits.memory import MemoryLimiter
from tokenway.limits.state import MemoryState, State

URL = "redis://127.0.0.1:6379/0"
D = Decimal


def book() -> BudgetBook:
    keys = [
        KeyConfig(name="a", key="sk-a", team="t", budget_usd=1.0),
        KeyConfig(name="b", key="sk-b", team="t", end_user_budget_usd=0.2),
    ]
    return BudgetBook(keys, [TeamConfig(name="t", budget_usd=1.5)])


@pytest.fixture(params=["memory", "redis"])
async def state(request: pytest.FixtureRequest) -> AsyncIterator[State]:
    if request.param == "memory":
        yield MemoryState(MemoryLimiter(), book())
        return
    from tokenway.limits.redis_state import RedisState

    try:
        redis.Redis.from_url(URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis is not running on 127.0.0.1:6379 ({exc}); see .ci/run")
    prefix = f"tokenway-test:{uuid.uuid4().hex}:"
    s = RedisState(URL, book(), prefix=prefix)
    await s.start()
    yield s
    await s.close()
    r = redis.Redis.from_url(URL)
    for key in r.scan_iter(match=prefix + "*"):
        r.delete(key)


async def test_rpm_admits_exactly_the_limit(state: State) -> None:
    p = Principal(name="a", rpm=5)
    for _ in range(5):
        room, _ = await state.admit_rate(p, 0)
    assert room.remaining_requests == 0
    with pytest.raises(RateLimited) as e:
        await state.admit_rate(p, 0)
    assert e.value.retry_after_s is not None and 0 < e.value.retry_after_s <= 60


async def test_tpm_settles_to_the_actual_count(state: State) -> None:
    p = Principal(name="a", tpm=100)
    _, held = await state.admit_rate(p, 80)
    with pytest.raises(RateLimited):
        await state.admit_rate(p, 30)
    await state.settle_rate(p, held, 20)
    room, _ = await state.admit_rate(p, 30)
    assert room.remaining_tokens == 50


async def test_budgets_are_all_or_none_across_key_team_and_end_user(state: State) -> None:
    a, b_user = Payer("a", "t"), Payer("b", "t", "u1")
    assert state.covers(a) and state.covers(b_user) and not state.covers(Payer("c"))
    holds = await state.admit_budget(a, D("0.9"))
    await state.settle_budget(holds, D("0.9"))
    holds = await state.admit_budget(b_user, D("0.15"))
    await state.settle_budget(holds, D("0.15"))
    with pytest.raises(BudgetExceeded, match="End user 'u1'"):
        await state.admit_budget(b_user, D("0.1"))
    with pytest.raises(BudgetExceeded, match="Key 'a'"):
        await state.admit_budget(a, D("0.2"))
    # the refusals reserved nothing: the team still has 1.5 - 1.05 for another end user
    holds = await state.admit_budget(Payer("b", "t", "u2"), D("0.2"))
    await state.settle_budget(holds, D("0.2"))
    with pytest.raises(BudgetExceeded, match="Team 't'"):  # 1.25 spent of 1.5
        await state.admit_budget(Payer("b", "t", "u3"), D("0.3"))


async def test_a_request_dearer_than_the_whole_budget_says_to_lower_max_tokens(
    state: State,
) -> None:
    a = Payer("a", "t")
    with pytest.raises(BudgetExceeded, match=r"more than Key 'a'.s whole total budget") as e:
        await state.admit_budget(a, D("5"))
    assert "lower max_tokens" in e.value.message
    holds = await state.admit_budget(a, D("0.9"))
    await state.settle_budget(holds, D("0.9"))
    with pytest.raises(BudgetExceeded, match="has reached its total budget"):
        await state.admit_budget(a, D("0.2"))

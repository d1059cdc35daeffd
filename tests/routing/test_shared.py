"""Ejections and learned headroom reach the other replicas through the real Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import redis

from tokenway.config.schema import RoutingConfig
from tokenway.routing.shared import SharedRouting
from tokenway.routing.state import RoutingState

URL = "redis://127.0.0.1:6379/0"
LABEL = "p/m"


@pytest.fixture
async def pair() -> AsyncIterator[tuple[SharedRouting, SharedRouting]]:
    try:
        redis.Redis.from_url(URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis is not running on 127.0.0.1:6379 ({exc}); see .ci/run")
    prefix = f"tokenway-test:{uuid.uuid4().hex}:"
    a, b = (SharedRouting(URL, prefix, RoutingState(RoutingConfig()), [LABEL]) for _ in range(2))
    yield a, b
    for s in (a, b):
        await s.close()
    r = redis.Redis.from_url(URL)
    for key in r.scan_iter(match=prefix + "*"):
        r.delete(key)


async def test_an_ejection_reaches_the_other_replica(
    pair: tuple[SharedRouting, SharedRouting],
) -> None:
    a, b = pair
    for _ in range(a.state.cfg.breaker.consecutive):
        a.state.breakers.failure(LABEL)
    assert a.state.breakers.ejected_for(LABEL) > 0
    await published(a)
    assert b.state.breakers.ejected_for(LABEL) == 0
    await b.refresh()
    left = b.state.breakers.ejected_for(LABEL)
    assert 0 < left <= a.state.cfg.breaker.base_s
    assert not b.state.breakers.acquire(LABEL)


async def test_a_learned_block_reaches_the_other_replica_and_is_not_echoed(
    pair: tuple[SharedRouting, SharedRouting],
) -> None:
    a, b = pair
    a.state.headroom.block(LABEL, 30.0)
    await published(a)
    await b.refresh()
    wait = b.state.headroom.wait_s(LABEL, "p", 0)
    assert 29.0 < wait <= 30.0
    assert not b._pending  # adopted, not published again


async def published(s: SharedRouting) -> None:
    """Wait for the replica's fire-and-forget publications."""
    await asyncio.gather(*s._pending)

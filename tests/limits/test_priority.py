"""Priority under scarcity: class shares of a model's in-flight cap, a bounded queue that
serves the best class first, and shedding with Retry-After."""

from __future__ import annotations

import asyncio

import pytest

from tokenway.errors import RateLimited
from tokenway.limits.priority import PriorityGate


async def test_shares_leave_the_last_slots_to_higher_classes() -> None:
    gate = PriorityGate(max_in_flight=4, queue=0, max_wait_s=0.05)
    low = [await gate.enter("low"), await gate.enter("low")]
    with pytest.raises(RateLimited) as e:
        await gate.enter("low")  # half the slots is all low priority gets
    assert e.value.retry_after_s is not None and e.value.retry_after_s >= 1
    normal = await gate.enter("normal")  # 3 of 4: normal stops at 80%
    with pytest.raises(RateLimited):
        await gate.enter("normal")
    high = await gate.enter("high")
    assert gate.in_flight == 4
    for slot in [*low, normal, high]:
        slot.release()
        slot.release()  # idempotent
    assert gate.in_flight == 0 and gate.shed == 2


async def test_queue_serves_high_first_and_evicts_low_for_high() -> None:
    gate = PriorityGate(max_in_flight=2, queue=2, max_wait_s=5.0)
    held = [await gate.enter("high"), await gate.enter("high")]
    order: list[str] = []

    async def wait(cls: str) -> None:
        try:
            slot = await gate.enter(cls)
        except RateLimited:
            order.append(f"shed-{cls}")
            return
        order.append(cls)
        await asyncio.sleep(0.01)
        slot.release()

    tasks = [asyncio.create_task(wait("low")), asyncio.create_task(wait("low"))]
    await asyncio.sleep(0.01)
    tasks.append(asyncio.create_task(wait("high")))  # the queue is full: a low one is shed
    await asyncio.sleep(0.01)
    assert order == ["shed-low"]
    for slot in held:
        slot.release()
    await asyncio.gather(*tasks)
    assert order == ["shed-low", "high", "low"]
    assert gate.in_flight == 0


async def test_wait_runs_out_and_cancellation_leaves_no_slot_behind() -> None:
    gate = PriorityGate(max_in_flight=1, queue=4, max_wait_s=0.05)
    slot = await gate.enter("normal")
    with pytest.raises(RateLimited):
        await gate.enter("normal")
    waiter = asyncio.create_task(gate.enter("normal", max_wait_s=5))
    await asyncio.sleep(0.01)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    slot.release()
    assert gate.in_flight == 0
    (await gate.enter("low")).release()
    assert gate.in_flight == 0

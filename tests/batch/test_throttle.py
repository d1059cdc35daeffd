"""The signals batch work yields to: interactive requests queued at a model's capacity gate,
and an event loop running late."""

from __future__ import annotations

import asyncio
import time

from tokenway.batch.throttle import Throttle
from tokenway.limits.priority import PriorityGate


async def test_interactive_requests_queued_at_a_gate_hold_batch_work_back() -> None:
    gate = PriorityGate(max_in_flight=2, queue=8, max_wait_s=30)
    throttle = Throttle({"m": gate}, yield_lag_s=0)
    held = [await gate.enter("high"), await gate.enter("high")]
    assert not throttle.contended("m")  # full, but nobody waits
    waiter = asyncio.create_task(gate.enter("normal"))
    while gate.waiting == 0:  # noqa: ASYNC110 - the waiter queues on its first step
        await asyncio.sleep(0)
    assert throttle.contended("m")
    assert not throttle.contended("other") and not throttle.contended(None)
    for slot in held:  # normal priority fits once both high-priority slots are free
        slot.release()
    (await waiter).release()
    assert not throttle.contended("m")


async def test_a_blocked_event_loop_reads_as_lagging() -> None:
    throttle = Throttle({}, yield_lag_s=0.005, interval_s=0.01)
    throttle.start()
    try:
        await asyncio.sleep(0.03)  # the watcher's first timer is armed
        time.sleep(0.1)  # noqa: ASYNC251 - the point: hold the loop the way CPU-bound work does
        await asyncio.sleep(0.03)
        assert throttle.lagging()
    finally:
        await throttle.close()


async def test_no_lag_threshold_means_no_watcher() -> None:
    throttle = Throttle({}, yield_lag_s=0)
    throttle.start()
    time.sleep(0.05)  # noqa: ASYNC251
    await asyncio.sleep(0.02)
    assert not throttle.lagging()
    await throttle.close()

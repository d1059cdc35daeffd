"""The attempt loop: failover, retries, breakers, headroom, the retry budget and deadlines.

Attempts are scripted coroutines (nothing is sent); the routing state's breakers, headroom and
retry budget run on a fake clock. Backoff pauses are real but kept to milliseconds."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import pytest

from tokenway.config.schema import BreakerSettings, ProviderConfig, RetryConfig, RoutingConfig
from tokenway.errors import (
    AllTargetsFailed,
    TargetUnsuitable,
    UpstreamConnectError,
    UpstreamError,
    UpstreamStatus,
    UpstreamTimeout,
)
from tokenway.execution.failover import Target, run
from tokenway.execution.retry import Deadline, RetryBudget
from tokenway.providers.h1 import H1Pool
from tokenway.providers.upstream import Upstream
from tokenway.routing.headroom import Headroom
from tokenway.routing.health import Breakers
from tokenway.routing.state import RoutingState

# Never sends: the scripted attempts do not call `Upstream.send`.
_POOL = H1Pool()

Outcome = str | UpstreamError


class Clock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


def target(provider: str, model: str = "m") -> Target:
    cfg = ProviderConfig(name=provider, kind="openai", base_url="http://127.0.0.1:9/v1")
    return Target(Upstream(cfg, cfg.base_url, _POOL), model)


def routing_state(
    clock: Clock, *, max_attempts: int = 4, consecutive: int = 5, backoff_ms: float = 1.0
) -> RoutingState:
    """A RoutingState whose breakers, headroom and retry budget run on `clock`."""
    cfg = RoutingConfig(
        retry=RetryConfig(max_attempts=max_attempts, backoff_ms=backoff_ms),
        breaker=BreakerSettings(consecutive=consecutive, base_s=10.0),
    )
    state = RoutingState(cfg)
    state.breakers = Breakers(cfg.breaker, clock=clock)
    state.headroom = Headroom(clock=clock, wall=lambda: 1_700_000_000.0)
    r = cfg.retry
    state.budget = RetryBudget(r.ratio, r.floor, r.window_s, clock=clock)
    return state


class Script:
    """Scripted attempts: each target's outcomes in turn (a value returns, an error raises);
    a target with no outcome left succeeds. `calls` lists the labels attempted, in order."""

    def __init__(self, outcomes: dict[str, Sequence[Outcome]], clock: Clock | None = None):
        self.outcomes = {label: list(seq) for label, seq in outcomes.items()}
        self.calls: list[str] = []
        self.left: list[float] = []
        self.times: list[float] = []
        self.clock = clock
        self.advance = 0.0  # fake seconds each attempt takes

    async def __call__(self, t: Target, left: float) -> str:
        self.calls.append(t.label)
        self.left.append(left)
        self.times.append(time.monotonic())
        if self.clock is not None:
            self.clock.now += self.advance
        queue = self.outcomes.get(t.label, [])
        outcome = queue.pop(0) if queue else f"ok from {t.label}"
        if isinstance(outcome, UpstreamError):
            raise outcome
        return outcome


def refused() -> UpstreamConnectError:
    return UpstreamConnectError("connection refused")


@pytest.fixture()
def clock() -> Clock:
    return Clock()


@pytest.fixture()
def a() -> Target:
    return target("a")


@pytest.fixture()
def b() -> Target:
    return target("b")


@pytest.fixture()
def c() -> Target:
    return target("c")


async def test_first_success_returns(clock: Clock, a: Target, b: Target) -> None:
    script = Script({})
    state = routing_state(clock)
    out = await run([a, b], script, state, Deadline(30.0, clock=clock))
    assert out == "ok from a/m"
    assert script.calls == ["a/m"]
    assert script.left == [pytest.approx(30.0)], "an attempt gets the seconds left"
    assert state.budget.in_flight == 0


async def test_a_failure_fails_over_to_the_next_target(clock: Clock, a: Target, b: Target) -> None:
    script = Script({"a/m": [refused()]})
    state = routing_state(clock)
    out = await run([a, b], script, state, Deadline(30.0, clock=clock))
    assert out == "ok from b/m"
    assert script.calls == ["a/m", "b/m"]
    assert state.budget.in_flight == 0, "the re-attempt's leave is given back"


async def test_a_client_error_stops_at_once(clock: Clock, a: Target, b: Target) -> None:
    script = Script({"a/m": [UpstreamStatus(400, "messages: field required")]})
    with pytest.raises(AllTargetsFailed) as e:
        await run([a, b], script, routing_state(clock), Deadline(30.0, clock=clock))
    assert script.calls == ["a/m"], "another target would refuse it too"
    assert e.value.status == 400 and e.value.flag == "U4XX"
    assert [label for label, _ in e.value.errors] == ["a/m"]


async def test_an_unsuitable_target_is_passed_over_and_not_retried(
    clock: Clock, a: Target, b: Target
) -> None:
    script = Script({"a/m": [TargetUnsuitable("cannot translate")], "b/m": [refused()]})
    out = await run([a, b], script, routing_state(clock), Deadline(30.0, clock=clock))
    assert out == "ok from b/m"
    assert script.calls == ["a/m", "b/m", "b/m"]


async def test_every_target_unsuitable_is_a_client_error(
    clock: Clock, a: Target, b: Target
) -> None:
    script = Script({"a/m": [TargetUnsuitable("no")], "b/m": [TargetUnsuitable("no")]})
    with pytest.raises(AllTargetsFailed) as e:
        await run([a, b], script, routing_state(clock), Deadline(30.0, clock=clock))
    assert script.calls == ["a/m", "b/m"]
    assert e.value.status == 400


async def test_an_ejected_target_is_skipped_without_an_attempt(
    clock: Clock, a: Target, b: Target
) -> None:
    state = routing_state(clock)
    for _ in range(5):
        state.breakers.failure("a/m")
    script = Script({})
    out = await run([a, b], script, state, Deadline(30.0, clock=clock))
    assert out == "ok from b/m"
    assert script.calls == ["b/m"]
    assert state.budget.in_flight == 0 and state.budget.denied == 0, "a skip is not a retry"


async def test_only_ejected_targets_is_service_unavailable(clock: Clock, a: Target) -> None:
    state = routing_state(clock)
    for _ in range(5):
        state.breakers.failure("a/m")
    clock.now += 4.0
    script = Script({})
    with pytest.raises(AllTargetsFailed) as e:
        await run([a], script, state, Deadline(30.0, clock=clock))
    assert script.calls == []
    assert e.value.status == 503 and e.value.flag == "UH"
    assert e.value.retry_after_s == pytest.approx(6.0), "when the ejection ends"


async def test_failures_feed_the_breaker_across_requests(clock: Clock, a: Target) -> None:
    state = routing_state(clock, max_attempts=1, consecutive=3)
    script = Script({"a/m": [refused(), UpstreamTimeout("no answer"), UpstreamStatus(502, "x")]})
    for _ in range(3):
        with pytest.raises(AllTargetsFailed):
            await run([a], script, state, Deadline(30.0, clock=clock))
    assert len(script.calls) == 3
    with pytest.raises(AllTargetsFailed) as e:
        await run([a], script, state, Deadline(30.0, clock=clock))
    assert len(script.calls) == 3, "ejected after three failures in a row"
    assert e.value.flag == "UH"


async def test_429_and_4xx_do_not_feed_the_breaker(clock: Clock, a: Target) -> None:
    state = routing_state(clock, max_attempts=1, consecutive=2)
    script = Script(
        {"a/m": [UpstreamStatus(429, "slow down", retry_after_s=0.5), UpstreamStatus(404, "x")]}
    )
    for _ in range(2):
        with pytest.raises(AllTargetsFailed):
            await run([a], script, state, Deadline(30.0, clock=clock))
        clock.now += 1.0
    assert state.breakers.acquire("a/m")


async def test_exhausted_retry_budget_ends_with_urx(
    clock: Clock, a: Target, b: Target, c: Target
) -> None:
    state = routing_state(clock)
    state.budget = RetryBudget(ratio=0.0, floor=0, clock=clock)
    script = Script({"a/m": [refused()]})
    with pytest.raises(AllTargetsFailed) as e:
        await run([a, b, c], script, state, Deadline(30.0, clock=clock))
    assert script.calls == ["a/m"]
    assert e.value.status == 503 and e.value.flag == "URX"
    assert state.budget.denied >= 1 and state.budget.in_flight == 0


async def test_the_deadline_passing_ends_with_dl(clock: Clock, a: Target, b: Target) -> None:
    script = Script({"a/m": [refused()]}, clock)
    script.advance = 2.0  # the failed attempt used up the whole second
    with pytest.raises(AllTargetsFailed) as e:
        await run([a, b], script, routing_state(clock), Deadline(1.0, clock=clock))
    assert script.calls == ["a/m"]
    assert e.value.status == 503 and e.value.flag == "DL"


async def test_a_passed_deadline_sends_nothing(clock: Clock, a: Target) -> None:
    deadline = Deadline(1.0, clock=clock)
    clock.now += 1.0
    script = Script({})
    state = routing_state(clock)
    with pytest.raises(AllTargetsFailed) as e:
        await run([a], script, state, deadline)
    assert script.calls == []
    assert e.value.flag == "DL"
    assert state.breakers.acquire("a/m")


async def test_all_connect_errors_are_503_with_retry_after(
    clock: Clock, a: Target, b: Target
) -> None:
    script = Script({"a/m": [refused()] * 2, "b/m": [refused()] * 2})
    with pytest.raises(AllTargetsFailed) as e:
        await run([a, b], script, routing_state(clock), Deadline(30.0, clock=clock))
    assert script.calls == ["a/m", "b/m", "a/m", "b/m"]
    assert e.value.status == 503 and e.value.flag == "UF"
    assert e.value.retry_after_s == 1.0
    assert "a/m" in e.value.message and "b/m" in e.value.message


async def test_all_5xx_take_the_soonest_retry_after(clock: Clock, a: Target, b: Target) -> None:
    script = Script(
        {
            "a/m": [UpstreamStatus(503, "busy", retry_after_s=7.0)],
            "b/m": [UpstreamStatus(500, "oops", retry_after_s=3.0)],
        }
    )
    state = routing_state(clock, max_attempts=2)
    with pytest.raises(AllTargetsFailed) as e:
        await run([a, b], script, state, Deadline(30.0, clock=clock))
    assert e.value.status == 503 and e.value.retry_after_s == 3.0


async def test_a_429_from_the_only_target_is_a_429(clock: Clock, a: Target) -> None:
    script = Script({"a/m": [UpstreamStatus(429, "rate limited", retry_after_s=3.0)]})
    state = routing_state(clock)
    with pytest.raises(AllTargetsFailed) as e:
        await run([a], script, state, Deadline(30.0, clock=clock))
    assert script.calls == ["a/m"], "no headroom until its Retry-After: not re-sent"
    assert e.value.status == 429 and e.value.error_type == "rate_limit_error"
    assert e.value.retry_after_s == pytest.approx(3.0)
    assert state.unavailable_s(a, 0) == pytest.approx(3.0)


async def test_a_429_fails_over_to_a_target_with_room(clock: Clock, a: Target, b: Target) -> None:
    script = Script({"a/m": [UpstreamStatus(429, "rate limited", retry_after_s=3.0)]})
    out = await run([a, b], script, routing_state(clock), Deadline(30.0, clock=clock))
    assert out == "ok from b/m"


async def test_max_attempts_caps_attempts(clock: Clock, a: Target, b: Target, c: Target) -> None:
    script = Script({label: [refused()] * 3 for label in ("a/m", "b/m", "c/m")})
    with pytest.raises(AllTargetsFailed) as e:
        await run(
            [a, b, c], script, routing_state(clock, max_attempts=2), Deadline(30.0, clock=clock)
        )
    assert script.calls == ["a/m", "b/m"]
    assert e.value.status == 503


async def test_a_second_round_retries_failed_targets_after_backoff(
    clock: Clock, a: Target, b: Target
) -> None:
    script = Script(
        {
            "a/m": [UpstreamStatus(503, "overloaded", retry_after_s=0.05)],
            "b/m": [refused(), refused()],
        }
    )
    out = await run([a, b], script, routing_state(clock), Deadline(30.0, clock=clock))
    assert out == "ok from a/m"
    assert script.calls == ["a/m", "b/m", "a/m"]
    # Going back to a target waits at least its Retry-After (real time: the pause is a sleep).
    assert script.times[2] - script.times[0] >= 0.05


async def test_only_rate_limits_in_the_way_waits_for_the_soonest(a: Target, b: Target) -> None:
    # Real clocks here: the loop sleeps until the soonest target has headroom again.
    state = RoutingState(RoutingConfig())
    started = time.monotonic()
    state.headroom.block("a/m", 1.0)
    state.headroom.block("b/m", 0.05)
    script = Script({})
    out = await run([a, b], script, state, Deadline(30.0))
    assert out == "ok from b/m"
    assert script.calls == ["b/m"]
    assert time.monotonic() - started >= 0.05


async def test_a_rate_limit_longer_than_the_wait_allowed_is_a_429(clock: Clock, a: Target) -> None:
    state = routing_state(clock)
    state.headroom.block("a/m", 30.0)
    script = Script({})
    with pytest.raises(AllTargetsFailed) as e:
        await run([a], script, state, Deadline(60.0, clock=clock))
    assert script.calls == []
    assert e.value.status == 429 and e.value.flag == "URL"
    assert e.value.retry_after_s == pytest.approx(30.0)


async def test_configured_rpm_is_counted_by_the_loop(clock: Clock, a: Target, b: Target) -> None:
    state = routing_state(clock)
    state.headroom.configure("a", rpm=1, tpm=None)
    script = Script({})
    assert await run([a, b], script, state, Deadline(30.0, clock=clock)) == "ok from a/m"
    assert await run([a, b], script, state, Deadline(30.0, clock=clock)) == "ok from b/m"
    assert script.calls == ["a/m", "b/m"]


async def test_a_half_open_probe_success_closes_the_breaker(clock: Clock, a: Target) -> None:
    state = routing_state(clock)
    for _ in range(5):
        state.breakers.failure("a/m")
    clock.now += 10.0
    script = Script({})
    assert await run([a], script, state, Deadline(30.0, clock=clock)) == "ok from a/m"
    assert state.breakers.ejected_for("a/m") == 0.0


async def test_a_cancelled_probe_is_given_back(clock: Clock, a: Target) -> None:
    # The client went away while the half-open probe was in flight: the next request must be
    # able to probe, or the target would stay out of rotation for good.
    state = routing_state(clock)
    for _ in range(5):
        state.breakers.failure("a/m")
    clock.now += 10.0
    started = asyncio.Event()

    async def hangs(t: Target, left: float) -> str:
        started.set()
        await asyncio.sleep(3600)
        return "never"

    task = asyncio.create_task(run([a], hangs, state, Deadline(30.0, clock=clock)))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert state.breakers.acquire("a/m")


# Hedging: a slow first attempt is raced to the next target


class Slow(Script):
    """Scripted attempts that first wait `delays[label]` real seconds."""

    def __init__(self, outcomes: dict[str, Sequence[Outcome]], delays: dict[str, float]):
        super().__init__(outcomes)
        self.delays = delays

    async def __call__(self, t: Target, left: float) -> str:
        await asyncio.sleep(self.delays.get(t.label, 0.0))
        return await super().__call__(t, left)


async def test_a_slow_first_attempt_is_hedged(clock: Clock, a: Target, b: Target) -> None:
    script = Slow({}, {"a/m": 5.0})
    state = routing_state(clock)
    started = time.monotonic()
    out = await run([a, b], script, state, Deadline(30.0, clock=clock), hedge_after_s=0.02)
    assert out == "ok from b/m"
    assert time.monotonic() - started < 1.0, "the slow attempt was cancelled, not awaited"


async def test_a_failed_hedge_does_not_undo_the_winner(clock: Clock, a: Target, b: Target) -> None:
    # The hedge is refused at once (this provider rejects some field); the first attempt then
    # answers: the client gets that answer, not the hedge's 400.
    script = Slow({"b/m": [UpstreamStatus(400, "unknown field")]}, {"a/m": 0.1})
    out = await run(
        [a, b], script, routing_state(clock), Deadline(30.0, clock=clock), hedge_after_s=0.02
    )
    assert out == "ok from a/m"
    assert sorted(script.calls) == ["a/m", "b/m"]


async def test_a_cancelled_hedge_gives_back_its_probe(clock: Clock, a: Target, b: Target) -> None:
    state = routing_state(clock)
    for _ in range(5):
        state.breakers.failure("b/m")
    clock.now += 10.0  # b is half-open: the hedge takes its probe
    script = Slow({}, {"a/m": 0.1, "b/m": 5.0})
    out = await run([a, b], script, state, Deadline(30.0, clock=clock), hedge_after_s=0.02)
    assert out == "ok from a/m"
    assert script.calls == ["a/m"], "b's attempt was cancelled while it waited"
    assert state.breakers.acquire("b/m"), "the probe is free for the next request"

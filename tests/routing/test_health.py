"""Breakers: ejection, doubling intervals, the half-open probe, and stale outcomes."""

from __future__ import annotations

import pytest

from tokenway.config.schema import BreakerSettings
from tokenway.routing.health import Breakers

T = "p/m"


class Clock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def breakers(
    clock: Clock,
    seen: list[tuple[str, float]] | None = None,
    *,
    consecutive: int = 3,
    error_rate: float = 0.5,
    window_s: float = 10.0,
    min_requests: int = 20,
) -> Breakers:
    """Breakers on `clock` ejecting for 1, 2, 4, 8, 8... seconds; ejections go to `seen`."""
    cfg = BreakerSettings(
        consecutive=consecutive,
        error_rate=error_rate,
        window_s=window_s,
        min_requests=min_requests,
        base_s=1.0,
        max_s=8.0,
    )

    def note(label: str, interval: float) -> None:
        if seen is not None:
            seen.append((label, interval))

    return Breakers(cfg, clock=clock, on_eject=note)


def eject(b: Breakers, n: int = 3) -> None:
    for _ in range(n):
        assert b.acquire(T)
        b.failure(T)


def test_unknown_target_is_closed() -> None:
    b = breakers(Clock())
    assert b.acquire("never/seen")
    assert b.ejected_for("never/seen") == 0.0


def test_ejected_after_n_consecutive_failures() -> None:
    clock, seen = Clock(), list[tuple[str, float]]()
    b = breakers(clock, seen)
    eject(b, 2)
    assert b.acquire(T) and b.ejected_for(T) == 0.0
    b.failure(T)
    assert not b.acquire(T)
    assert b.ejected_for(T) == pytest.approx(1.0)
    assert seen == [(T, 1.0)]


def test_a_success_breaks_the_streak() -> None:
    b = breakers(Clock())
    eject(b, 2)
    b.success(T)
    eject(b, 2)
    assert b.acquire(T)


def test_error_rate_trips_only_from_min_requests() -> None:
    clock = Clock()
    b = breakers(clock, consecutive=100, min_requests=10, error_rate=0.5, window_s=10.0)
    # Alternate so that no streak builds: 4 failures in 9 outcomes, then the 10th a failure.
    for i in range(9):
        if i % 2 == 0:
            b.success(T)
        else:
            b.failure(T)
        clock.now += 0.1
    assert b.acquire(T), "below min_requests the rate is not judged"
    b.failure(T)  # 5 of 10 failed: 50%
    assert not b.acquire(T)


def test_error_rate_forgets_outcomes_outside_the_window() -> None:
    clock = Clock()
    b = breakers(clock, consecutive=100, min_requests=4, error_rate=0.5, window_s=10.0)
    b.failure(T)
    b.failure(T)
    clock.now += 11.0  # both fall out of the window
    b.success(T)
    b.success(T)
    b.success(T)
    b.failure(T)  # 1 of 4
    assert b.acquire(T)


def test_interval_doubles_and_is_capped() -> None:
    clock, seen = Clock(), list[tuple[str, float]]()
    b = breakers(clock, seen)
    eject(b)
    for _ in range(5):
        clock.now += b.ejected_for(T)
        assert b.acquire(T), "half-open: the probe goes through"
        b.failure(T)
    assert [i for _, i in seen] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


def test_half_open_lets_one_probe_at_a_time() -> None:
    clock = Clock()
    b = breakers(clock)
    eject(b)
    clock.now += 0.5
    assert not b.acquire(T), "still ejected"
    clock.now += 0.5
    assert b.acquire(T)
    assert not b.acquire(T), "the probe is in flight"
    assert b.ejected_for(T) > 0


def test_probe_success_closes_and_forgets_the_ejections() -> None:
    clock, seen = Clock(), list[tuple[str, float]]()
    b = breakers(clock, seen)
    eject(b)
    clock.now += 1.0
    assert b.acquire(T)
    b.success(T)
    assert b.acquire(T) and b.acquire(T), "closed: no probe limit"
    assert b.ejected_for(T) == 0.0
    eject(b)  # a new ejection starts over from base_s
    assert seen[-1] == (T, 1.0)


def test_probe_failure_ejects_again_for_longer() -> None:
    clock, seen = Clock(), list[tuple[str, float]]()
    b = breakers(clock, seen)
    eject(b)
    clock.now += 1.0
    assert b.acquire(T)
    b.failure(T)  # one failure is enough in half-open state
    assert not b.acquire(T)
    assert b.ejected_for(T) == pytest.approx(2.0)
    assert seen == [(T, 1.0), (T, 2.0)]


def test_failures_sent_before_the_ejection_do_not_extend_it() -> None:
    clock, seen = Clock(), list[tuple[str, float]]()
    b = breakers(clock, seen)
    for _ in range(6):  # six attempts in flight at once
        assert b.acquire(T)
    for _ in range(6):
        b.failure(T)  # the 3rd ejects; the 4th to 6th were sent before
    assert seen == [(T, 1.0)]
    clock.now += 1.0
    assert b.acquire(T), "the ejection was not extended"


def test_successes_sent_before_the_ejection_do_not_close_it() -> None:
    # A long stream that started before the target went bad finishes fine meanwhile: that says
    # nothing of new attempts, and must not reset the doubling of the next ejection.
    clock, seen = Clock(), list[tuple[str, float]]()
    b = breakers(clock, seen)
    assert b.acquire(T)  # the long attempt
    eject(b)
    b.success(T)
    assert not b.acquire(T), "still ejected"
    clock.now += 1.0
    assert b.acquire(T)
    b.failure(T)
    assert seen == [(T, 1.0), (T, 2.0)]


def test_release_gives_back_the_probe() -> None:
    clock = Clock()
    b = breakers(clock)
    eject(b)
    clock.now += 1.0
    assert b.acquire(T)
    b.release(T)  # the probe was never sent (say, no retry budget)
    assert b.acquire(T)
    assert not b.acquire(T)


def test_release_of_unknown_target_is_harmless() -> None:
    b = breakers(Clock())
    b.release("never/seen")
    assert b.acquire("never/seen")


def test_targets_are_independent() -> None:
    b = breakers(Clock())
    eject(b)
    assert not b.acquire(T)
    assert b.acquire("p/other")

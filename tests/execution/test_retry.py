"""Re-attempt policy: the retry budget, backoff with Retry-After, and deadlines."""

from __future__ import annotations

import random
import statistics
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokenway.execution.retry import Deadline, RetryBudget, backoff_s


class Clock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# RetryBudget


def test_the_floor_is_always_allowed_in_flight() -> None:
    budget = RetryBudget(ratio=0.0, floor=2, clock=Clock())
    assert budget.try_acquire() and budget.try_acquire()
    assert not budget.try_acquire()
    assert budget.denied == 1
    budget.release()
    assert budget.try_acquire(), "a released slot of the floor is free again"


def test_beyond_the_floor_retries_are_a_ratio_of_requests() -> None:
    budget = RetryBudget(ratio=0.2, floor=0, window_s=10.0, clock=Clock())
    for _ in range(10):
        budget.request()
    assert budget.try_acquire() and budget.try_acquire()  # 2 of 10 requests
    assert not budget.try_acquire()
    budget.release()
    assert not budget.try_acquire(), "the ratio counts retries made, not those in flight"
    for _ in range(5):
        budget.request()
    assert budget.try_acquire()  # 3 of 15


def test_the_floor_or_the_ratio_whichever_allows_more() -> None:
    budget = RetryBudget(ratio=0.5, floor=1, clock=Clock())
    for _ in range(4):
        budget.request()
    # Held in flight: the first fits the floor, the second the ratio (2 of 4 requests).
    assert budget.try_acquire()
    assert budget.try_acquire()
    assert not budget.try_acquire()
    assert budget.in_flight == 2


def test_window_expiry_forgets_requests_and_retries() -> None:
    clock = Clock()
    budget = RetryBudget(ratio=0.5, floor=0, window_s=10.0, clock=clock)
    for _ in range(4):
        budget.request()
    assert budget.try_acquire() and budget.try_acquire()
    assert not budget.try_acquire()
    clock.now += 5.0
    budget.request()
    budget.request()
    clock.now += 5.5  # the first four requests and both retries leave the window
    assert budget.try_acquire(), "1 retry for the 2 recent requests"
    assert not budget.try_acquire()
    clock.now += 10.0
    assert not budget.try_acquire(), "no recent requests: no leave beyond the floor"


def test_a_storm_costs_at_most_the_ratio_plus_the_floor() -> None:
    # A thousand requests in flight at once, every one failing and wanting two re-attempts.
    budget = RetryBudget(ratio=0.2, floor=3, window_s=10.0, clock=Clock())
    for _ in range(1000):
        budget.request()
    granted = sum(budget.try_acquire() for _ in range(2000))
    # The floor's grants count against the ratio too: whichever allows more, not their sum.
    assert granted == 200
    assert budget.denied == 2000 - granted


def test_at_low_concurrency_the_floor_lets_every_retry_through() -> None:
    # One request at a time: failing over from a dead primary is never starved.
    budget = RetryBudget(ratio=0.0, floor=1, clock=Clock())
    for _ in range(100):
        budget.request()
        assert budget.try_acquire()
        budget.release()


# backoff_s (draws from the `random` module)


@pytest.fixture()
def seeded() -> Iterator[None]:
    saved = random.getstate()
    random.seed(42)
    yield
    random.setstate(saved)


@pytest.mark.usefixtures("seeded")
def test_backoff_honours_retry_after() -> None:
    for round_ in (1, 2, 5):
        assert backoff_s(round_, 3.0, base_s=0.05) == 3.0
    assert backoff_s(1, 0.0, base_s=0.05) <= 0.05


@given(st.integers(1, 12), st.floats(0.001, 1.0))
def test_backoff_is_bounded_by_base_times_two_to_the_round(round_: int, base: float) -> None:
    # Hypothesis seeds the `random` module for each example.
    wait = backoff_s(round_, None, base_s=base)
    assert 0.0 <= wait <= base * 2 ** (round_ - 1)


@pytest.mark.usefixtures("seeded")
def test_backoff_grows_with_the_round() -> None:
    means = [statistics.fmean(backoff_s(r, None, 0.05) for _ in range(2000)) for r in (1, 2, 3, 4)]
    # Full jitter: the mean is half the bound, which doubles each round.
    for r, mean in enumerate(means, start=1):
        assert mean == pytest.approx(0.05 * 2 ** (r - 1) / 2, rel=0.1)
    assert means == sorted(means)


# Deadline


def test_deadline_counts_down_on_its_own_clock() -> None:
    clock = Clock()
    deadline = Deadline(5.0, clock=clock)
    assert deadline.left() == pytest.approx(5.0)
    clock.now += 4.0
    assert deadline.left() == pytest.approx(1.0)
    clock.now += 2.0
    assert deadline.left() == pytest.approx(-1.0)


def test_deadline_left_may_be_read_on_another_clock() -> None:
    clock, other = Clock(), Clock()
    deadline = Deadline(5.0, clock=clock)
    other.now += 3.0
    assert deadline.left(other) == pytest.approx(2.0)


def test_deadline_on_the_real_clock() -> None:
    deadline = Deadline(60.0)
    assert 59.0 < deadline.left() <= 60.0

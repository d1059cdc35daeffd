"""The attempt loop: a request's targets, in the router's order, inside one deadline.

`run` returns the first attempt's result or raises `AllTargetsFailed` with the error of every
target tried (or skipped), and does nothing else: cost, ledger and metrics hang off the
attempts and the outcome, not off this loop. It consults and feeds the shared routing state:

- a target whose breaker is open is skipped (not an attempt, so not a retry);
- a target with no headroom is skipped; if nothing else is left the request waits for the
  soonest one when that fits in its deadline;
- every attempt after the first needs the retry budget's leave, and waits out a jittered
  backoff (never shorter than the provider's `Retry-After`) when it goes back to a target
  already tried;
- a non-retryable error (a 400 the client caused) ends the loop at once, since another target
  would refuse it too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tokenway.errors import (
    AllTargetsFailed,
    NoCapacity,
    TargetUnsuitable,
    UpstreamError,
    UpstreamStatus,
)
from tokenway.execution.retry import Deadline, backoff_s
from tokenway.providers.upstream import Upstream
from tokenway.routing.state import RoutingState

T = TypeVar("T")

# An attempt gets the seconds left before the deadline.
Attempt = Callable[["Target", float], Awaitable[T]]


class Target:
    """One deployment of a model: an upstream, the model name it knows, and what the router
    needs to know about it."""

    __slots__ = ("capabilities", "context_window", "label", "limits", "model", "upstream", "weight")

    def __init__(
        self,
        upstream: Upstream,
        model: str,
        *,
        weight: float = 1.0,
        context_window: int | None = None,
        capabilities: frozenset[str] | None = None,
    ) -> None:
        self.upstream = upstream
        self.model = model
        self.weight = weight
        self.context_window = context_window
        self.capabilities = capabilities
        self.label = f"{upstream.name}/{model}"

    def __repr__(self) -> str:
        return f"Target({self.label})"


async def run(
    targets: list[Target],
    attempt: Attempt[T],
    state: RoutingState,
    deadline: Deadline,
    tokens: int = 0,
    hedge_after_s: float | None = None,
) -> T:
    """Try `targets` in order, then again while attempts, budget and deadline allow.

    With `hedge_after_s`, a first attempt that has not produced its result (for a stream: its
    first content) after that long is raced by the same request to the next available target,
    under the hedge budget; the first to succeed wins and the other is cancelled.
    """
    errors: list[tuple[str, UpstreamError]] = []
    tried: set[str] = set()
    sent = 0
    retry_after: dict[str, float] = {}
    max_attempts = state.cfg.retry.max_attempts
    state.budget.request()
    if hedge_after_s is not None:
        state.hedges.request()
    pending = list(targets)
    round_ = 0
    waited = False
    stop = False  # the deadline or the retry budget has ended the request
    while pending:
        skipped: list[tuple[Target, float]] = []  # no headroom now
        ejected: list[tuple[Target, float]] = []  # breaker open
        failed: list[Target] = []
        for t in pending:
            if sent >= max_attempts:
                break
            if round_ == 0 and t.label in tried:
                continue  # raced as a hedge already
            wait = state.unavailable_s(t, tokens)
            if wait > 0:
                skipped.append((t, wait))
                continue
            if not state.breakers.acquire(t.label):
                ejected.append((t, state.breakers.ejected_for(t.label) or 0.1))
                continue
            left = deadline.left()
            again = t.label in tried
            pause = backoff_s(round_, retry_after.get(t.label), state.backoff_s) if again else 0
            if left <= pause:
                state.breakers.release(t.label)
                errors.append((t.label, NoCapacity("the request's deadline passed", flag="DL")))
                stop = True
                break
            retry = sent > 0
            if retry and not state.budget.try_acquire():
                state.breakers.release(t.label)
                errors.append((t.label, NoCapacity("retry budget exhausted", flag="URX")))
                stop = True
                break
            try:
                if pause:
                    await asyncio.sleep(pause)
                sent += 1
                tried.add(t.label)
                state.headroom.take(t.label, t.upstream.name, tokens)
                started = time.monotonic()
                if sent == 1 and hedge_after_s is not None:
                    alt = _hedge_target(state, pending, t, tokens)
                    winner, result, lost = await _race(
                        t, alt, attempt, state, deadline, hedge_after_s, tokens
                    )
                    raced = {x.label for x, _ in lost} | ({winner.label} if winner else set())
                    if alt is not None and alt.label in raced:
                        sent += 1
                        tried.add(alt.label)
                    if winner is not None:
                        # A raced attempt that failed (even with a 400) does not undo the
                        # winner's answer: it only informs the routing state.
                        for loser, err in lost:
                            state.failed(loser, err)
                        state.succeeded(winner, time.monotonic() - started)
                        return result  # type: ignore[return-value]
                    for loser, err in lost:
                        _note_failure(state, loser, err, errors, retry_after, failed)
                    continue
                result = await attempt(t, deadline.left())
            except UpstreamError as err:
                _note_failure(state, t, err, errors, retry_after, failed)
                continue
            except BaseException:
                # Cancelled (the client went away) mid-attempt: a claimed half-open probe must
                # be given back, or the target would never be probed again.
                state.breakers.release(t.label)
                raise
            finally:
                if retry:
                    state.budget.release()
            state.succeeded(t, time.monotonic() - started)
            return result
        if not stop and sent == 0 and skipped and not errors and not waited:
            # Only rate limits stand in the way: wait once for the soonest target to have
            # headroom again, if that fits in the deadline (an open breaker is not waited for).
            t, wait = min(skipped, key=lambda s: s[1])
            if wait < min(deadline.left(), state.max_wait_s):
                waited = True
                await asyncio.sleep(wait)
                pending = [t]
                continue
        if stop or not failed or sent >= max_attempts:
            errors.extend((s.label, state.why_skipped(s, w)) for s, w in skipped + ejected)
            break
        round_ += 1
        pending = failed
    raise AllTargetsFailed(errors)


def _note_failure(
    state: RoutingState,
    t: Target,
    err: UpstreamError,
    errors: list[tuple[str, UpstreamError]],
    retry_after: dict[str, float],
    failed: list[Target],
) -> None:
    state.failed(t, err)
    errors.append((t.label, err))
    if isinstance(err, UpstreamStatus) and err.retry_after_s is not None:
        retry_after[t.label] = err.retry_after_s
    if not err.retryable:
        raise AllTargetsFailed(errors) from None
    if not isinstance(err, TargetUnsuitable):
        failed.append(t)


def _hedge_target(
    state: RoutingState, pending: list[Target], first: Target, tokens: int
) -> Target | None:
    """The next target after `first` that could take a hedge now (not yet claimed)."""
    after = pending[pending.index(first) + 1 :] if first in pending else []
    for t in after:
        if state.unavailable_s(t, tokens) == 0 and state.breakers.ejected_for(t.label) == 0:
            return t
    return None


async def _race(
    first: Target,
    alt: Target | None,
    attempt: Attempt[T],
    state: RoutingState,
    deadline: Deadline,
    after_s: float,
    tokens: int,
) -> tuple[Target | None, T | None, list[tuple[Target, UpstreamError]]]:
    """Run `first`; if it has not finished after `after_s`, race `alt` against it.

    Returns (winner, result, failures); winner is None when every raced attempt failed. The
    loser of a race is cancelled (its attempt records what it cost)."""
    lost: list[tuple[Target, UpstreamError]] = []
    tasks: dict[asyncio.Future[T], Target] = {
        asyncio.ensure_future(attempt(first, deadline.left())): first
    }
    try:
        done, _ = await asyncio.wait(tasks, timeout=after_s)
        if not done and alt is not None and state.hedges.try_acquire():
            # The hedge is counted by the hedge budget; the slot is not held while it runs.
            state.hedges.release()
            if state.breakers.acquire(alt.label):
                state.headroom.take(alt.label, alt.upstream.name, tokens)
                state.hedged(first, alt)
                tasks[asyncio.ensure_future(attempt(alt, deadline.left()))] = alt
        while tasks:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for fut in done:
                t = tasks.pop(fut)
                exc = fut.exception()
                if exc is None:
                    return t, fut.result(), lost
                if not isinstance(exc, UpstreamError):
                    raise exc
                lost.append((t, exc))
        return None, None, lost
    finally:
        for fut, t in tasks.items():
            fut.cancel()
            # Neither a success nor a failure: a probe the loser held is given back.
            state.breakers.release(t.label)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

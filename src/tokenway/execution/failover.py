"""Ordered fallback over a model's targets.

`first_success` returns the first attempt's result or raises `AllTargetsFailed` with the error
of every target tried, and does nothing else: cost, ledger and metrics hang off the attempts
and the outcome, not off this loop. A non-retryable error (a 400 the client caused) ends the
loop at once, since another target would refuse it too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import msgspec

from tokenway.errors import AllTargetsFailed, UpstreamError
from tokenway.providers.upstream import Upstream

T = TypeVar("T")


class Target(msgspec.Struct, frozen=True):
    """One deployment of a model: an upstream and the model name it knows."""

    upstream: Upstream
    model: str

    @property
    def label(self) -> str:
        return f"{self.upstream.name}/{self.model}"


async def first_success(
    targets: list[Target],
    attempt: Callable[[Target], Awaitable[T]],
    pause_s: float = 0.0,
) -> T:
    """Try `targets` in order until one attempt succeeds."""
    errors: list[tuple[str, UpstreamError]] = []
    for i, target in enumerate(targets):
        if i and pause_s:
            await asyncio.sleep(pause_s)
        try:
            return await attempt(target)
        except UpstreamError as err:
            errors.append((target.label, err))
            if not err.retryable:
                break
    raise AllTargetsFailed(errors)

"""The client errors of the Batch API and async tasks beyond the gateway's own, and the one
place where the job store's `StoreUnavailable` becomes the client's 503."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from tokenway.batch.store import JobStore
from tokenway.errors import ClientError, TokenwayError
from tokenway.store import StoreUnavailable

__all__ = ["Conflict", "StoreDown", "in_store"]

T = TypeVar("T")


class Conflict(ClientError):
    """The object is not in a state that allows this (say, cancelling a completed batch)."""

    status = 409


class StoreDown(TokenwayError):
    """The job store cannot be reached: 503, worth retrying."""

    status = 503
    error_type = "api_error"
    flag = "STORE"


async def in_store(store: JobStore, fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` on a worker thread, the store's tables made first; `StoreDown` while the
    store cannot be reached."""

    def run() -> T:
        store.ensure()
        return fn(*args)

    try:
        return await asyncio.to_thread(run)
    except StoreUnavailable:
        raise StoreDown("The batch store is unavailable; retry shortly.") from None

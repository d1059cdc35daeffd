"""Fixtures for the simulated-provider tests: a factory of started `SimServer`s."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from tokenway.config.schema import SimScenario
from tokenway.sim import SimServer

KEY = "sk-sim-test-0123456789"
MakeSim = Callable[..., Awaitable[SimServer]]


def fast(**overrides: Any) -> SimScenario:
    """A scenario without latency, so tests run in milliseconds."""
    fields: dict[str, Any] = {"ttft_ms": 0.0, "tokens_per_s": 1e9, "api_key": KEY}
    fields.update(overrides)
    return SimScenario(**fields)


@pytest.fixture
async def make_sim() -> AsyncIterator[MakeSim]:
    started: list[SimServer] = []

    async def make(kind: str, scenario: SimScenario | None = None, **kw: Any) -> SimServer:
        server = SimServer(kind, scenario or fast(), **kw)  # type: ignore[arg-type]
        await server.start()
        started.append(server)
        return server

    yield make
    for server in started:
        await server.close()

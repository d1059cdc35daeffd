"""Starting several simulated providers at once, and `tokenway sim`'s serving loop."""

from __future__ import annotations

import asyncio

from tokenway.config.schema import SimProviderConfig
from tokenway.sim.server import SimServer


async def start_sims(configs: list[SimProviderConfig]) -> dict[str, SimServer]:
    """Start one `SimServer` per config; returns them by name, all listening.

    If one fails to start, those already started are closed before the error propagates.
    """
    names = [c.name for c in configs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"duplicate simulated provider names: {', '.join(duplicates)}")
    servers: dict[str, SimServer] = {}
    try:
        for c in configs:
            server = SimServer(c.kind, c.scenario, host=c.host, port=c.port, name=c.name)
            await server.start()
            servers[c.name] = server
    except BaseException:
        await close_all(servers)
        raise
    return servers


async def close_all(servers: dict[str, SimServer]) -> None:
    """Close every server (used on shutdown)."""
    for server in servers.values():
        await server.close()


async def serve_forever(configs: list[SimProviderConfig]) -> None:
    """Start all, print `name kind base_url` per server, and serve until cancelled."""
    servers = await start_sims(configs)
    try:
        for name, server in servers.items():
            print(f"{name} {server.kind} {server.base_url}", flush=True)
        await asyncio.Event().wait()
    finally:
        await close_all(servers)

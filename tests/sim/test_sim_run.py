"""`start_sims`, `serve_forever`, and the package's public API."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

import tokenway.sim
from tokenway.config.schema import SimProviderConfig
from tokenway.sim import SimServer, serve_forever, start_sims

from .conftest import fast


def test_public_api_is_pinned() -> None:
    assert sorted(tokenway.sim.__all__) == [
        "ReceivedRequest",
        "SimServer",
        "serve_forever",
        "start_sims",
    ]


async def test_start_sims_by_name() -> None:
    configs = [
        SimProviderConfig(name="oa", kind="openai", scenario=fast()),
        SimProviderConfig(name="an", kind="anthropic"),
        SimProviderConfig(name="ge", kind="gemini"),
    ]
    sims = await start_sims(configs)
    try:
        assert set(sims) == {"oa", "an", "ge"}
        assert sims["oa"].base_url == f"http://127.0.0.1:{sims['oa'].port}/v1"
        assert sims["an"].base_url == f"http://127.0.0.1:{sims['an'].port}"
        assert len({s.port for s in sims.values()}) == 3
        url = sims["an"].base_url + "/v1/models"
        async with aiohttp.ClientSession() as s, s.get(url) as r:
            assert r.status == 400  # no anthropic-version header
    finally:
        for sim in sims.values():
            await sim.close()


async def test_start_sims_rejects_duplicates_and_cleans_up() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        await start_sims([SimProviderConfig(name="x", kind="openai")] * 2)
    taken = SimServer("openai", fast())
    await taken.start()
    try:
        configs = [
            SimProviderConfig(name="a", kind="openai"),
            SimProviderConfig(name="b", kind="openai", port=taken.port),
        ]
        with pytest.raises(OSError):
            await start_sims(configs)
    finally:
        await taken.close()


async def test_serve_forever_prints_and_stops(capsys: pytest.CaptureFixture[str]) -> None:
    configs = [SimProviderConfig(name="demo", kind="gemini")]
    task = asyncio.create_task(serve_forever(configs))
    out = ""
    for _ in range(200):
        await asyncio.sleep(0.01)
        out += capsys.readouterr().out
        if out:
            break
    name, kind, url = out.split()
    assert (name, kind) == ("demo", "gemini") and url.startswith("http://127.0.0.1:")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with aiohttp.ClientSession() as s:
        with pytest.raises(aiohttp.ClientConnectionError):
            await s.get(url + "/v1beta/models")

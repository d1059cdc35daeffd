"""Injected faults: status, timeout, drop, cut; `first_n`, `rate` and the seed."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import anthropic
import openai
import pytest

from tokenway.config.schema import Fault

from .conftest import KEY, MakeSim, fast

MSGS: Any = [{"role": "user", "content": "hi"}]
OPENAI_AUTH = {"Authorization": f"Bearer {KEY}"}


def oa(base_url: str, **kw: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=base_url, api_key=KEY, max_retries=0, **kw)


async def test_status_fault_in_each_shape(make_sim: MakeSim) -> None:
    fault = [Fault(kind="status", status=503, retry_after_s=2)]
    sim = await make_sim("openai", fast(faults=fault))
    async with oa(sim.base_url) as c:
        with pytest.raises(openai.InternalServerError) as info:
            await c.chat.completions.create(model="m", messages=MSGS)
    assert info.value.status_code == 503
    assert info.value.response.headers["retry-after"] == "2"
    assert info.value.body["type"] == "server_error"  # type: ignore[index]

    ant = await make_sim("anthropic", fast(faults=[Fault(kind="status", status=529)]))
    async with anthropic.AsyncAnthropic(base_url=ant.base_url, api_key=KEY, max_retries=0) as c:
        with pytest.raises(anthropic.APIStatusError) as ainfo:
            await c.messages.create(model="claude-sonnet-4-6", max_tokens=5, messages=MSGS)
    assert ainfo.value.status_code == 529
    assert ainfo.value.body == {  # type: ignore[comparison-overlap]
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Simulated upstream error 529."},
    }

    gem = await make_sim("gemini", fast(faults=fault))
    url = f"{gem.base_url}/v1beta/models/g:generateContent"
    body = {"contents": [{"parts": [{"text": "x"}]}]}
    async with (
        aiohttp.ClientSession() as s,
        s.post(url, json=body, headers={"x-goog-api-key": KEY}) as r,
    ):
        assert r.status == 503
        err = (await r.json())["error"]
    assert err["status"] == "UNAVAILABLE" and err["code"] == 503
    assert {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "2s"} in err[
        "details"
    ]


async def test_first_n_then_success_and_scenario_swap(make_sim: MakeSim) -> None:
    sim = await make_sim("openai", fast(faults=[Fault(kind="status", status=500, first_n=2)]))
    async with oa(sim.base_url) as c:
        for _ in range(2):
            with pytest.raises(openai.InternalServerError):
                await c.chat.completions.create(model="m", messages=MSGS)
        ok = await c.chat.completions.create(model="m", messages=MSGS)
        assert ok.choices[0].message.content
        sim.scenario = fast(faults=[Fault(kind="status", status=502, first_n=1)])
        with pytest.raises(openai.InternalServerError) as info:
            await c.chat.completions.create(model="m", messages=MSGS)
        assert info.value.status_code == 502
        await c.chat.completions.create(model="m", messages=MSGS)
    assert sim.request_count == 5


async def outcomes(sim_url: str, n: int) -> list[int]:
    statuses = []
    async with aiohttp.ClientSession() as s:
        for _ in range(n):
            body = {"model": "m", "messages": MSGS}
            async with s.post(sim_url + "/chat/completions", json=body, headers=OPENAI_AUTH) as r:
                statuses.append(r.status)
    return statuses


async def test_fault_rate_is_seeded(make_sim: MakeSim) -> None:
    faults = [Fault(kind="status", status=500, rate=0.5)]
    a = await make_sim("openai", fast(faults=faults, seed=7))
    b = await make_sim("openai", fast(faults=faults, seed=7))
    c = await make_sim("openai", fast(faults=faults, seed=8))
    runs = [await outcomes(s.base_url, 24) for s in (a, b, c)]
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]
    assert set(runs[0]) == {200, 500}


async def test_faults_apply_in_order(make_sim: MakeSim) -> None:
    faults = [Fault(kind="status", status=429, first_n=1), Fault(kind="status", status=503)]
    sim = await make_sim("openai", fast(faults=faults))
    assert await outcomes(sim.base_url, 3) == [429, 503, 503]


async def test_timeout_hangs_until_client_gives_up(make_sim: MakeSim) -> None:
    sim = await make_sim("openai", fast(faults=[Fault(kind="timeout")]))
    async with oa(sim.base_url, timeout=0.3) as c:
        with pytest.raises(openai.APITimeoutError):
            await c.chat.completions.create(model="m", messages=MSGS)
    # A request still hanging on the server does not hold up closing it.
    async with aiohttp.ClientSession() as s:
        body = {"model": "m", "messages": MSGS}
        pending = asyncio.ensure_future(
            s.post(sim.base_url + "/chat/completions", json=body, headers=OPENAI_AUTH)
        )
        await asyncio.sleep(0.1)
        assert not pending.done()
        started = time.monotonic()
        await sim.close()
        assert time.monotonic() - started < 2
        with pytest.raises(aiohttp.ClientError):
            await pending


async def test_drop_closes_without_answer(make_sim: MakeSim) -> None:
    sim = await make_sim("openai", fast(faults=[Fault(kind="drop")]))
    async with oa(sim.base_url) as c:
        with pytest.raises(openai.APIConnectionError):
            await c.chat.completions.create(model="m", messages=MSGS)
    async with aiohttp.ClientSession() as s:
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await s.post(
                sim.base_url + "/chat/completions",
                json={"model": "m", "messages": MSGS},
                headers=OPENAI_AUTH,
            )


@pytest.mark.parametrize("kind", ["openai", "anthropic", "gemini"])
async def test_cut_stream_after_chunks(make_sim: MakeSim, kind: str) -> None:
    sim = await make_sim(kind, fast(output_tokens=40, faults=[Fault(kind="cut", after_chunks=3)]))
    if kind == "openai":
        url = sim.base_url + "/chat/completions"
        body: Any = {"model": "m", "messages": MSGS, "stream": True}
        headers = OPENAI_AUTH
    elif kind == "anthropic":
        url = sim.base_url + "/v1/messages"
        body = {"model": "m", "max_tokens": 99, "messages": MSGS, "stream": True}
        headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
    else:
        url = sim.base_url + "/v1beta/models/g:streamGenerateContent?alt=sse"
        body = {"contents": [{"parts": [{"text": "x"}]}]}
        headers = {"x-goog-api-key": KEY}
    frames = 0
    async with aiohttp.ClientSession() as s, s.post(url, json=body, headers=headers) as r:
        assert r.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            async for line in r.content:
                frames += line.startswith(b"data:")
    assert frames == 3


async def test_cut_with_sdk_and_on_whole_answers(make_sim: MakeSim) -> None:
    sim = await make_sim("openai", fast(output_tokens=30, faults=[Fault(kind="cut")]))
    got = []
    async with oa(sim.base_url) as c:
        stream = await c.chat.completions.create(model="m", messages=MSGS, stream=True)
        with pytest.raises(openai.APIError):
            async for chunk in stream:
                got.append(chunk)
        assert 1 <= len(got) <= 2
        with pytest.raises(openai.APIConnectionError):
            await c.chat.completions.create(model="m", messages=MSGS)


async def test_faults_spare_model_listing(make_sim: MakeSim) -> None:
    sim = await make_sim("openai", fast(faults=[Fault(kind="drop")]))
    async with oa(sim.base_url) as c:
        assert [m.id async for m in c.models.list()]

"""Rate limits: the sliding window itself, and each provider's headers and 429s."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import aiohttp
import anthropic
import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenway.sim.ratelimit import SlidingWindow, go_duration

from .conftest import KEY, MakeSim, fast

MSGS: Any = [{"role": "user", "content": "hi"}]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@settings(max_examples=60, deadline=None)
@given(
    rpm=st.integers(1, 5),
    tpm=st.integers(50, 300),
    steps=st.lists(st.tuples(st.floats(0, 40), st.integers(1, 120)), max_size=40),
)
def test_window_never_exceeds_limits(rpm: int, tpm: int, steps: list[tuple[float, int]]) -> None:
    clock = Clock()
    window = SlidingWindow(clock=clock)
    admitted: list[tuple[float, int]] = []
    for dt, tokens in steps:
        clock.now += dt
        decision = window.admit(rpm, tpm, tokens)
        if decision.allowed:
            admitted.append((clock.now, tokens))
            recent = [n for t, n in admitted if t > clock.now - 60]
            assert len(recent) <= rpm and sum(recent) <= tpm
            assert decision.snapshot.remaining_requests == rpm - len(recent)
            assert decision.snapshot.remaining_tokens == tpm - sum(recent)
        else:
            assert decision.exceeded in ("requests", "tokens")
            assert 0 < decision.retry_after_s <= 60
            if tokens <= tpm:
                # Waiting exactly as long as told is enough, and a moment less is not.
                probe = SlidingWindow(clock=clock)
                probe._entries, probe._tokens = window._entries.copy(), window._tokens
                clock.now += decision.retry_after_s - 0.01
                assert not probe.admit(rpm, tpm, tokens).allowed
                clock.now += 0.02
                assert probe.admit(rpm, tpm, tokens).allowed
                clock.now -= decision.retry_after_s + 0.01


def test_go_duration() -> None:
    assert go_duration(0.02) == "20ms"
    assert go_duration(1.5) == "1.5s"
    assert go_duration(360) == "6m0s"


async def test_openai_headers_and_429(make_sim: MakeSim) -> None:
    sim = await make_sim("openai", fast(rpm=2, tpm=100_000))
    async with openai.AsyncOpenAI(base_url=sim.base_url, api_key=KEY, max_retries=0) as c:
        first = await c.chat.completions.with_raw_response.create(model="m", messages=MSGS)
        second = await c.chat.completions.with_raw_response.create(model="m", messages=MSGS)
        with pytest.raises(openai.RateLimitError) as info:
            await c.chat.completions.create(model="m", messages=MSGS)
        models = await c.models.with_raw_response.list()
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert second.headers["x-ratelimit-remaining-requests"] == "0"
    assert re.fullmatch(r"(\d+m)?\d+(\.\d+)?(ms|s)", first.headers["x-ratelimit-reset-requests"])
    assert first.headers["x-ratelimit-limit-tokens"] == "100000"
    used = first.parse().usage.total_tokens  # type: ignore[union-attr]
    assert int(first.headers["x-ratelimit-remaining-tokens"]) == 100_000 - used
    err = info.value
    assert err.status_code == 429 and err.response.headers["retry-after"] == "60"
    assert err.response.headers["x-ratelimit-remaining-requests"] == "0"
    assert err.body["type"] == "requests"  # type: ignore[index]
    assert err.body["code"] == "rate_limit_exceeded"  # type: ignore[index]
    assert models.headers["x-ratelimit-limit-requests"] == "2"


async def test_openai_tpm(make_sim: MakeSim) -> None:
    sim = await make_sim("openai", fast(tpm=30, output_tokens=16))
    async with openai.AsyncOpenAI(base_url=sim.base_url, api_key=KEY, max_retries=0) as c:
        await c.chat.completions.create(model="m", messages=MSGS)
        with pytest.raises(openai.RateLimitError) as info:
            await c.chat.completions.create(model="m", messages=MSGS)
    assert info.value.body["type"] == "tokens"  # type: ignore[index]


async def test_anthropic_headers_and_429(make_sim: MakeSim) -> None:
    sim = await make_sim("anthropic", fast(rpm=1, tpm=10_000))
    async with anthropic.AsyncAnthropic(base_url=sim.base_url, api_key=KEY, max_retries=0) as c:
        ok = await c.messages.with_raw_response.create(
            model="claude-sonnet-4-6", max_tokens=20, messages=MSGS
        )
        with pytest.raises(anthropic.RateLimitError) as info:
            await c.messages.create(model="claude-sonnet-4-6", max_tokens=20, messages=MSGS)
    h = ok.headers
    assert h["anthropic-ratelimit-requests-limit"] == "1"
    assert h["anthropic-ratelimit-requests-remaining"] == "0"
    reset = datetime.strptime(h["anthropic-ratelimit-requests-reset"], "%Y-%m-%dT%H:%M:%SZ")
    delta = reset.replace(tzinfo=UTC) - datetime.now(UTC)
    assert 50 < delta.total_seconds() <= 61
    assert h["anthropic-ratelimit-tokens-limit"] == "10000"
    assert info.value.response.headers["retry-after"] == "60"
    assert info.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]


async def test_gemini_resource_exhausted(make_sim: MakeSim) -> None:
    sim = await make_sim("gemini", fast(rpm=1))
    url = f"{sim.base_url}/v1beta/models/g:generateContent"
    body = {"contents": [{"parts": [{"text": "x"}]}]}
    async with aiohttp.ClientSession() as s:
        async with s.post(url, json=body, headers={"x-goog-api-key": KEY}) as r:
            assert r.status == 200
        async with s.post(url, json=body, headers={"x-goog-api-key": KEY}) as r:
            assert r.status == 429
            err = (await r.json())["error"]
    assert err["status"] == "RESOURCE_EXHAUSTED"
    retry = [d for d in err["details"] if d["@type"].endswith("google.rpc.RetryInfo")]
    assert retry and re.fullmatch(r"\d+s", retry[0]["retryDelay"])

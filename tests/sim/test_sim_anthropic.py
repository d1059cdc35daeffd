"""The Anthropic-protocol simulator, driven by the official anthropic SDK."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import anthropic
import pytest

from tokenway.sim import text as tx

from .conftest import KEY, MakeSim, fast

TOOL: Any = {
    "name": "lookup",
    "description": "look something up",
    "input_schema": {
        "type": "object",
        "properties": {"query": {"type": "string"}, "limit": {"type": "integer"}},
        "required": ["query", "limit"],
    },
}
HEADERS = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}


def client(base_url: str, key: str = KEY) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=base_url, api_key=key, max_retries=0)


async def sse_events(url: str, body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(event, data) pairs of a raw SSE answer."""
    async with aiohttp.ClientSession() as s, s.post(url, json=body, headers=HEADERS) as r:
        assert r.status == 200, await r.text()
        assert r.headers["Content-Type"].startswith("text/event-stream")
        raw = (await r.read()).decode()
    events = []
    for frame in raw.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in frame.split("\n"))
        data = json.loads(lines["data"])
        assert data["type"] == lines["event"]
        events.append((lines["event"], data))
    return events


async def test_create_text_message(make_sim: MakeSim) -> None:
    sim = await make_sim("anthropic", fast(output_tokens=9))
    async with client(sim.base_url) as c:
        msg = await c.messages.create(
            model="claude-sonnet-4-6",
            max_tokens=100,
            system="be brief",
            messages=[{"role": "user", "content": "hello"}],
        )
    assert msg.type == "message" and msg.role == "assistant" and msg.id.startswith("msg_")
    assert msg.stop_reason == "end_turn"
    assert msg.content[0].type == "text"
    assert tx.count_tokens(msg.content[0].text) == 9
    assert msg.usage.output_tokens == 9
    assert msg.usage.input_tokens > 0
    assert msg.usage.cache_read_input_tokens == 0
    seen = sim.received[0].headers
    assert KEY in (seen.get("x-api-key"), seen.get("authorization", "")[7:])


async def test_max_tokens_stop_reason(make_sim: MakeSim) -> None:
    sim = await make_sim("anthropic", fast(output_tokens=30))
    async with client(sim.base_url) as c:
        msg = await c.messages.create(
            model="claude-sonnet-4-6", max_tokens=4, messages=[{"role": "user", "content": "x"}]
        )
    assert msg.stop_reason == "max_tokens" and msg.usage.output_tokens == 4


async def test_stream_with_sdk_matches_create(make_sim: MakeSim) -> None:
    sim = await make_sim("anthropic", fast(output_tokens=8))
    kwargs: Any = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "stream me"}],
    }
    async with client(sim.base_url) as c:
        whole = await c.messages.create(**kwargs)
        async with c.messages.stream(**kwargs) as stream:
            pieces = [t async for t in stream.text_stream]
            final = await stream.get_final_message()
    assert len(pieces) == 8
    assert "".join(pieces) == whole.content[0].text == final.content[0].text  # type: ignore[union-attr]
    assert final.usage.output_tokens == 8
    assert final.usage.input_tokens == whole.usage.input_tokens
    assert final.stop_reason == "end_turn"


async def test_raw_event_sequence(make_sim: MakeSim) -> None:
    sim = await make_sim("anthropic", fast(output_tokens=3))
    body = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 50,
        "stream": True,
        "messages": [{"role": "user", "content": "x"}],
    }
    events = await sse_events(sim.base_url + "/v1/messages", body)
    names = [e for e, _ in events]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = events[0][1]["message"]
    assert start["content"] == [] and start["stop_reason"] is None
    delta = events[-2][1]
    assert delta["delta"]["stop_reason"] == "end_turn"
    assert delta["usage"]["output_tokens"] == 3
    assert delta["usage"]["input_tokens"] == start["usage"]["input_tokens"]


async def test_tool_use_then_text(make_sim: MakeSim) -> None:
    sim = await make_sim("anthropic")
    msgs: Any = [{"role": "user", "content": "find it"}]
    async with client(sim.base_url) as c:
        msg = await c.messages.create(
            model="claude-sonnet-4-6", max_tokens=200, messages=msgs, tools=[TOOL]
        )
        assert msg.stop_reason == "tool_use"
        block = msg.content[-1]
        assert block.type == "tool_use" and block.id.startswith("toolu_")
        assert block.name == "lookup" and block.input == {"query": "sim", "limit": 1}

        async with c.messages.stream(
            model="claude-sonnet-4-6", max_tokens=200, messages=msgs, tools=[TOOL]
        ) as stream:
            partials = [
                ev.delta.partial_json
                async for ev in stream
                if ev.type == "content_block_delta" and ev.delta.type == "input_json_delta"
            ]
            final = await stream.get_final_message()
        assert len([p for p in partials if p]) > 1
        streamed = final.content[-1]
        assert streamed.type == "tool_use" and streamed.input == block.input

        follow: Any = [
            *msgs,
            {"role": "assistant", "content": [block.model_dump()]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": block.id, "content": "42"}],
            },
        ]
        after = await c.messages.create(
            model="claude-sonnet-4-6", max_tokens=200, messages=follow, tools=[TOOL]
        )
    assert after.stop_reason == "end_turn" and after.content[0].type == "text"


async def test_thinking_block_with_signature(make_sim: MakeSim) -> None:
    sim = await make_sim("anthropic", fast(reasoning_tokens=6, output_tokens=4))
    kwargs: Any = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 2048,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "messages": [{"role": "user", "content": "ponder"}],
    }
    async with client(sim.base_url) as c:
        msg = await c.messages.create(**kwargs)
        async with c.messages.stream(**kwargs) as stream:
            kinds = [ev.delta.type async for ev in stream if ev.type == "content_block_delta"]
            final = await stream.get_final_message()
    thinking = msg.content[0]
    assert thinking.type == "thinking" and thinking.signature
    assert tx.count_tokens(thinking.thinking) == 6
    assert msg.content[1].type == "text"
    assert msg.usage.output_tokens == 10
    assert kinds == ["thinking_delta"] * 6 + ["signature_delta"] + ["text_delta"] * 4
    assert final.content[0].type == "thinking"
    assert final.content[0].signature == thinking.signature
    assert final.content[0].thinking == thinking.thinking


async def test_thinking_budget_must_be_below_max_tokens(make_sim: MakeSim) -> None:
    sim = await make_sim("anthropic")
    async with client(sim.base_url) as c:
        with pytest.raises(anthropic.BadRequestError) as info:
            await c.messages.create(
                model="claude-sonnet-4-6",
                max_tokens=100,
                thinking={"type": "enabled", "budget_tokens": 1024},
                messages=[{"role": "user", "content": "x"}],
            )
    assert info.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]


async def test_prompt_cache_write_then_read(make_sim: MakeSim) -> None:
    sim = await make_sim("anthropic", fast(cache_min_tokens=100))
    long_doc = "".join(tx.words(tx.rng_for("doc"), 300))
    system: Any = [{"type": "text", "text": long_doc, "cache_control": {"type": "ephemeral"}}]
    first_q: Any = [{"role": "user", "content": "question one"}]
    async with client(sim.base_url) as c:
        one = await c.messages.create(
            model="claude-sonnet-4-6", max_tokens=50, system=system, messages=first_q
        )
        two = await c.messages.create(
            model="claude-sonnet-4-6",
            max_tokens=50,
            system=system,
            messages=[{"role": "user", "content": "another question"}],
        )
        hour = await c.messages.create(
            model="claude-sonnet-4-6",
            max_tokens=50,
            system=[{**system[0], "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
            messages=[
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "text",
                            "text": "".join(tx.words(tx.rng_for("more"), 200)),
                            "cache_control": {"type": "ephemeral", "ttl": "1h"},
                        }
                    ],
                }
            ],
        )
        uncached = await c.messages.create(
            model="claude-sonnet-4-6", max_tokens=50, messages=first_q
        )
    written = one.usage.cache_creation_input_tokens or 0
    assert written >= 300 and one.usage.cache_read_input_tokens == 0
    assert one.usage.cache_creation is not None
    assert one.usage.cache_creation.ephemeral_5m_input_tokens == written
    assert one.usage.cache_creation.ephemeral_1h_input_tokens == 0
    # The cached prefix is excluded from input_tokens.
    assert two.usage.cache_read_input_tokens == written
    assert two.usage.cache_creation_input_tokens == 0
    total_two = two.usage.input_tokens + written
    assert total_two == one.usage.input_tokens + written - tx.count_tokens("question one") + (
        tx.count_tokens("another question")
    )
    # Same system text, new 1h marks: the system prefix is read, the new user block written 1h.
    assert hour.usage.cache_read_input_tokens == written
    assert hour.usage.cache_creation is not None
    assert hour.usage.cache_creation.ephemeral_1h_input_tokens >= 200
    assert hour.usage.cache_creation.ephemeral_5m_input_tokens == 0
    assert uncached.usage.cache_read_input_tokens == 0
    assert uncached.usage.cache_creation_input_tokens == 0


async def test_count_tokens_matches_usage(make_sim: MakeSim) -> None:
    sim = await make_sim("anthropic")
    kwargs: Any = {"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": "hi"}]}
    async with client(sim.base_url) as c:
        counted = await c.messages.count_tokens(**kwargs)
        msg = await c.messages.create(max_tokens=10, **kwargs)
    assert counted.input_tokens == msg.usage.input_tokens > 0


async def test_version_header_required_and_error_shape(make_sim: MakeSim) -> None:
    sim = await make_sim("anthropic")
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    async with aiohttp.ClientSession() as s:
        url = sim.base_url + "/v1/messages"
        async with s.post(url, json=body, headers={"x-api-key": KEY}) as r:
            assert r.status == 400
            data = await r.json()
        assert data["type"] == "error"
        assert data["error"]["type"] == "invalid_request_error"
        assert "anthropic-version" in data["error"]["message"]
        assert r.headers["request-id"].startswith("req_")
        missing = {k: v for k, v in body.items() if k != "max_tokens"}
        async with s.post(url, json=missing, headers=HEADERS) as r:
            assert r.status == 400


async def test_wrong_key_is_401(make_sim: MakeSim) -> None:
    sim = await make_sim("anthropic")
    async with client(sim.base_url, key="sk-ant-wrong") as c:
        with pytest.raises(anthropic.AuthenticationError) as info:
            await c.messages.create(
                model="m", max_tokens=5, messages=[{"role": "user", "content": "x"}]
            )
    assert info.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    assert "sk-ant-wrong" not in info.value.response.text


async def test_models_list(make_sim: MakeSim) -> None:
    sim = await make_sim("anthropic")
    async with client(sim.base_url) as c:
        ids = [m.id async for m in c.models.list()]
    assert "claude-sonnet-4-6" in ids

"""The OpenAI-protocol simulator, driven by the official openai SDK."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import openai
import pytest

from tokenway.sim import text as tx

from .conftest import KEY, MakeSim, fast

WEATHER_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer"},
                "metric": {"type": "boolean"},
                "unit": {"type": "string", "enum": ["c", "f"]},
                "note": {"type": "string"},
            },
            "required": ["city", "days", "metric", "unit"],
        },
    },
}
OTHER_TOOL: Any = {"type": "function", "function": {"name": "other", "parameters": {}}}


def client(base_url: str, key: str = KEY) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=base_url, api_key=key, max_retries=0)


async def test_chat_reply_is_deterministic_and_counted(make_sim: MakeSim) -> None:
    sim = await make_sim("openai", fast(output_tokens=12))
    msgs: Any = [{"role": "user", "content": "Tell me about rivers."}]
    async with client(sim.base_url) as c:
        a = await c.chat.completions.create(model="gpt-4o-mini", messages=msgs)
        b = await c.chat.completions.create(model="gpt-4o-mini", messages=msgs)
        other = await c.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Something else"}]
        )
    assert a.object == "chat.completion"
    text = a.choices[0].message.content
    assert text and text == b.choices[0].message.content
    assert text != other.choices[0].message.content
    assert a.choices[0].finish_reason == "stop"
    assert a.usage is not None
    assert a.usage.completion_tokens == 12 == tx.count_tokens(text)
    assert a.usage.prompt_tokens > tx.count_tokens("Tell me about rivers.")
    assert a.usage.total_tokens == a.usage.prompt_tokens + 12
    assert a.service_tier == "default"
    assert sim.request_count == 3
    seen = sim.received[0]
    assert seen.method == "POST" and seen.path == "/v1/chat/completions"
    assert seen.headers["authorization"] == f"Bearer {KEY}"
    assert seen.body["messages"] == msgs


async def test_seed_changes_the_reply(make_sim: MakeSim) -> None:
    one = await make_sim("openai", fast(seed=1))
    two = await make_sim("openai", fast(seed=2))
    msgs: Any = [{"role": "user", "content": "hello"}]
    texts = []
    for sim in (one, two):
        async with client(sim.base_url) as c:
            r = await c.chat.completions.create(model="m", messages=msgs)
            texts.append(r.choices[0].message.content)
    assert texts[0] != texts[1]


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
async def test_max_tokens_caps_with_length(make_sim: MakeSim, field: str) -> None:
    sim = await make_sim("openai", fast(output_tokens=20))
    async with client(sim.base_url) as c:
        r = await c.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}], **{field: 5}
        )
    assert r.choices[0].finish_reason == "length"
    assert r.usage is not None and r.usage.completion_tokens == 5


async def test_stream_matches_whole_answer_and_reports_usage(make_sim: MakeSim) -> None:
    sim = await make_sim("openai", fast(output_tokens=10))
    msgs: Any = [{"role": "user", "content": "stream please"}]
    async with client(sim.base_url) as c:
        whole = await c.chat.completions.create(model="gpt-4o-mini", messages=msgs)
        chunks = [
            ch
            async for ch in await c.chat.completions.create(
                model="gpt-4o-mini",
                messages=msgs,
                stream=True,
                stream_options={"include_usage": True},
                service_tier="flex",
            )
        ]
        bare = [
            ch
            async for ch in await c.chat.completions.create(
                model="gpt-4o-mini", messages=msgs, stream=True
            )
        ]
    assert all(ch.object == "chat.completion.chunk" for ch in chunks)
    content = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert content == whole.choices[0].message.content
    assert len([ch for ch in chunks if ch.choices and ch.choices[0].delta.content]) == 10
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "stop"
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert last.usage.completion_tokens == 10
    assert last.usage.prompt_tokens == whole.usage.prompt_tokens  # type: ignore[union-attr]
    assert all(ch.usage is None for ch in chunks[:-1])
    assert {ch.service_tier for ch in chunks} == {"flex"}
    assert all(ch.usage is None for ch in bare) and bare[-1].choices


async def test_tool_call_then_text_after_tool_result(make_sim: MakeSim) -> None:
    sim = await make_sim("openai")
    msgs: Any = [{"role": "user", "content": "weather in Paris?"}]
    async with client(sim.base_url) as c:
        r = await c.chat.completions.create(
            model="gpt-4o", messages=msgs, tools=[WEATHER_TOOL, OTHER_TOOL]
        )
        choice = r.choices[0]
        assert choice.finish_reason == "tool_calls"
        assert choice.message.content is None
        call = choice.message.tool_calls[0]  # type: ignore[index]
        assert call.type == "function" and call.id.startswith("call_")
        assert call.function.name == "get_weather"
        args = json.loads(call.function.arguments)
        assert args == {"city": "sim", "days": 1, "metric": True, "unit": "c"}

        named = await c.chat.completions.create(
            model="gpt-4o",
            messages=msgs,
            tools=[WEATHER_TOOL, OTHER_TOOL],
            tool_choice={"type": "function", "function": {"name": "other"}},
        )
        assert named.choices[0].message.tool_calls[0].function.name == "other"  # type: ignore[index]
        none = await c.chat.completions.create(
            model="gpt-4o", messages=msgs, tools=[WEATHER_TOOL], tool_choice="none"
        )
        assert none.choices[0].message.tool_calls is None

        follow: Any = [
            *msgs,
            {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
            {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
        ]
        after = await c.chat.completions.create(
            model="gpt-4o", messages=follow, tools=[WEATHER_TOOL]
        )
        assert after.choices[0].finish_reason == "stop"
        assert after.choices[0].message.content


async def test_streamed_tool_call_arrives_in_pieces(make_sim: MakeSim) -> None:
    sim = await make_sim("openai")
    async with client(sim.base_url) as c:
        stream = await c.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "weather?"}],
            tools=[WEATHER_TOOL],
            stream=True,
        )
        deltas = [ch.choices[0] async for ch in stream if ch.choices]
    calls = [tc for d in deltas for tc in (d.delta.tool_calls or [])]
    assert calls[0].id and calls[0].function and calls[0].function.name == "get_weather"
    pieces = [tc.function.arguments for tc in calls[1:] if tc.function]
    assert len(pieces) > 1
    assert json.loads("".join(pieces))["city"] == "sim"
    assert deltas[-1].finish_reason == "tool_calls"


async def test_json_modes_reply_valid_json(make_sim: MakeSim) -> None:
    sim = await make_sim("openai")
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "n": {"type": "number"}},
        "required": ["name", "n"],
        "additionalProperties": False,
    }
    msgs: Any = [{"role": "user", "content": "json please"}]
    async with client(sim.base_url) as c:
        obj = await c.chat.completions.create(
            model="gpt-4o", messages=msgs, response_format={"type": "json_object"}
        )
        structured = await c.chat.completions.create(
            model="gpt-4o",
            messages=msgs,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": schema, "strict": True},
            },
        )
    assert isinstance(json.loads(obj.choices[0].message.content or ""), dict)
    assert json.loads(structured.choices[0].message.content or "") == {"name": "sim", "n": 1}
    assert structured.usage is not None
    assert structured.usage.completion_tokens == tx.count_tokens(
        structured.choices[0].message.content or ""
    )


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "properties": 5, "required": ["a"]},
        {"type": "object", "properties": {"a": {"enum": 3}}},
        {"anyOf": 7},
        {"type": "array", "minItems": "two"},
        {"type": "integer", "minimum": "one"},
    ],
)
async def test_a_schema_it_cannot_follow_is_a_400(make_sim: MakeSim, schema: Any) -> None:
    # as a provider answers, so that the gateway passes a client error on (it was a 503)
    sim = await make_sim("openai")
    msgs: Any = [{"role": "user", "content": "json please"}]
    tool = {"type": "function", "function": {"name": "f", "parameters": schema}}
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    async with client(sim.base_url) as c:
        with pytest.raises(openai.BadRequestError) as as_tool:
            await c.chat.completions.create(
                model="gpt-4o", messages=msgs, tools=[tool], tool_choice="required"
            )
        with pytest.raises(openai.BadRequestError) as as_format:
            await c.chat.completions.create(model="gpt-4o", messages=msgs, response_format=fmt)
    assert "Invalid schema" in as_tool.value.message
    assert "Invalid schema" in as_format.value.message


async def test_reasoning_models_report_reasoning_tokens(make_sim: MakeSim) -> None:
    sim = await make_sim("openai", fast(reasoning_tokens=7, output_tokens=5))
    msgs: Any = [{"role": "user", "content": "think"}]
    async with client(sim.base_url) as c:
        o3 = await c.chat.completions.create(model="o3-mini", messages=msgs)
        plain = await c.chat.completions.create(model="gpt-4o", messages=msgs)
    assert o3.usage is not None and o3.usage.completion_tokens_details is not None
    assert o3.usage.completion_tokens_details.reasoning_tokens == 7
    assert o3.usage.completion_tokens == 12
    assert tx.count_tokens(o3.choices[0].message.content or "") == 5
    assert plain.usage is not None and plain.usage.completion_tokens_details is not None
    assert plain.usage.completion_tokens_details.reasoning_tokens == 0


async def test_deepseek_usage_style(make_sim: MakeSim) -> None:
    sim = await make_sim("openai", fast(usage_style="deepseek", reasoning_tokens=3))
    async with aiohttp.ClientSession() as s:
        body = {"model": "deepseek-reasoner", "messages": [{"role": "user", "content": "x"}]}
        async with s.post(
            sim.base_url + "/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {KEY}"},
        ) as r:
            data = await r.json()
    usage = data["usage"]
    assert usage["prompt_cache_hit_tokens"] == 0
    assert usage["prompt_cache_miss_tokens"] == usage["prompt_tokens"]
    assert data["choices"][0]["message"]["reasoning_content"]
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 3


async def test_images_cost_85_tokens(make_sim: MakeSim) -> None:
    sim = await make_sim("openai")
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    text = {"type": "text", "text": "what is this"}
    async with client(sim.base_url) as c:
        with_image = await c.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": [text, image]}]
        )
        without = await c.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": [text]}]
        )
    assert with_image.usage is not None and without.usage is not None
    assert with_image.usage.prompt_tokens - without.usage.prompt_tokens == 85


async def test_embeddings_base64_and_float(make_sim: MakeSim) -> None:
    sim = await make_sim("openai")
    async with client(sim.base_url) as c:
        r = await c.embeddings.create(
            model="text-embedding-3-small", input=["alpha beta", "gamma", "alpha beta"]
        )
        small = await c.embeddings.create(
            model="text-embedding-3-large", input="x", dimensions=8, encoding_format="float"
        )
    assert sim.received[0].body["encoding_format"] == "base64"  # the SDK's default
    vecs = [d.embedding for d in r.data]
    assert [len(v) for v in vecs] == [1536] * 3
    assert vecs[0] == pytest.approx(vecs[2]) and vecs[0] != vecs[1]
    assert sum(v * v for v in vecs[0]) == pytest.approx(1.0, rel=1e-4)
    assert r.usage.prompt_tokens == tx.count_tokens("alpha beta") * 2 + tx.count_tokens("gamma")
    assert len(small.data[0].embedding) == 8


async def test_models_list(make_sim: MakeSim) -> None:
    sim = await make_sim("openai")
    async with client(sim.base_url) as c:
        ids = [m.id async for m in c.models.list()]
    assert "gpt-4o-mini" in ids and "text-embedding-3-small" in ids


async def test_wrong_key_is_401_without_echoing_it(make_sim: MakeSim) -> None:
    sim = await make_sim("openai")
    async with client(sim.base_url, key="sk-wrong-secret-value") as c:
        with pytest.raises(openai.AuthenticationError) as info:
            await c.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 401
    assert "sk-wrong-secret-value" not in info.value.response.text
    assert info.value.body["code"] == "invalid_api_key"  # type: ignore[index]


async def test_bad_requests_are_400_in_openai_shape(make_sim: MakeSim) -> None:
    sim = await make_sim("openai")
    auth = {"Authorization": f"Bearer {KEY}"}
    async with aiohttp.ClientSession() as s:
        async with s.post(
            sim.base_url + "/chat/completions", json={"model": "m"}, headers=auth
        ) as r:
            assert r.status == 400
            err = (await r.json())["error"]
            assert set(err) == {"message", "type", "param", "code"}
            assert err["type"] == "invalid_request_error" and err["param"] == "messages"
        async with s.post(sim.base_url + "/chat/completions", data=b"{nope", headers=auth) as r:
            assert r.status == 400
        async with s.post(sim.base_url + "/nowhere", json={}, headers=auth) as r:
            assert r.status == 404
            assert "error" in await r.json()


async def test_azure_deployment_paths(make_sim: MakeSim) -> None:
    sim = await make_sim("openai")
    root = f"http://127.0.0.1:{sim.port}/openai/deployments/my-gpt"
    body = {"messages": [{"role": "user", "content": "hi"}]}
    async with openai.AsyncAzureOpenAI(
        azure_endpoint=f"http://127.0.0.1:{sim.port}",
        api_key=KEY,
        api_version="2024-10-21",
        max_retries=0,
    ) as az:
        r = await az.chat.completions.create(model="my-gpt", messages=body["messages"])
        e = await az.embeddings.create(model="my-embed", input="hello")
    assert r.choices[0].message.content and len(e.data[0].embedding) == 1536
    assert sim.received[0].path == "/openai/deployments/my-gpt/chat/completions"
    assert sim.received[0].headers["api-key"] == KEY
    async with aiohttp.ClientSession() as s:
        async with s.post(root + "/chat/completions", json=body, headers={"api-key": KEY}) as r2:
            assert r2.status == 400  # no api-version
        bearer = {"Authorization": f"Bearer {KEY}"}
        url = root + "/chat/completions?api-version=2024-10-21"
        async with s.post(url, json=body, headers=bearer) as r3:
            assert r3.status == 401  # Azure keys travel in api-key

"""Every client API × provider kind, whole and streamed, with tools, through the official SDKs."""

from __future__ import annotations

import json

import anthropic
import openai
import pytest

from .conftest import KEY, clients_for
from .stack import Stack

KINDS = ["m-openai", "m-anthropic", "m-gemini"]
WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


def oai(stack: Stack, key: str = KEY) -> openai.OpenAI:
    return clients_for(stack).openai(key)


def ant(stack: Stack, key: str = KEY) -> anthropic.Anthropic:
    return clients_for(stack).anthropic(key)


@pytest.mark.parametrize("model", KINDS)
def test_openai_client_whole(stack: Stack, model: str) -> None:
    r = oai(stack).chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "Say hello"}], max_tokens=50
    )
    c = r.parse()
    assert c.choices[0].message.content
    assert c.choices[0].finish_reason == "stop"
    assert c.usage is not None and c.usage.prompt_tokens > 0 and c.usage.completion_tokens > 0
    assert r.headers["x-tokenway-request-id"].startswith("req_")
    assert r.headers["x-tokenway-provider"] == model[2:]


@pytest.mark.parametrize("model", KINDS)
def test_openai_client_stream(stack: Stack, model: str) -> None:
    chunks = list(
        oai(stack).chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "Say hello"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text
    finishes = [
        ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason
    ]
    assert finishes == ["stop"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


@pytest.mark.parametrize("model", KINDS)
def test_openai_stream_without_usage_request_gets_none(stack: Stack, model: str) -> None:
    chunks = list(
        oai(stack).chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hi"}], stream=True
        )
    )
    assert chunks
    assert all(ch.usage is None for ch in chunks)


@pytest.mark.parametrize("model", KINDS)
def test_anthropic_client_whole(stack: Stack, model: str) -> None:
    m = ant(stack).messages.create(
        model=model, max_tokens=50, messages=[{"role": "user", "content": "Say hello"}]
    )
    assert m.type == "message" and m.role == "assistant"
    assert m.content[0].type == "text" and m.content[0].text
    assert m.stop_reason == "end_turn"
    assert m.usage.input_tokens > 0 and m.usage.output_tokens > 0


@pytest.mark.parametrize("model", KINDS)
def test_anthropic_client_stream(stack: Stack, model: str) -> None:
    with ant(stack).messages.stream(
        model=model, max_tokens=50, messages=[{"role": "user", "content": "Say hello"}]
    ) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text and final.content[0].text == text
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 0


@pytest.mark.parametrize("model", KINDS)
@pytest.mark.parametrize("streamed", [False, True])
def test_openai_client_tool_round_trip(stack: Stack, model: str, streamed: bool) -> None:
    client = oai(stack)
    msgs: list[dict[str, object]] = [{"role": "user", "content": "Weather in Paris?"}]
    tools = [{"type": "function", "function": WEATHER}]
    if streamed:
        calls: dict[int, dict[str, str]] = {}
        finish = None
        for ch in client.chat.completions.create(
            model=model, messages=msgs, tools=tools, stream=True
        ):
            if not ch.choices:
                continue
            for tc in ch.choices[0].delta.tool_calls or []:
                slot = calls.setdefault(tc.index, {"id": "", "name": "", "args": ""})
                slot["id"] += tc.id or ""
                slot["name"] += (tc.function.name if tc.function else None) or ""
                slot["args"] += (tc.function.arguments if tc.function else None) or ""
            finish = ch.choices[0].finish_reason or finish
        assert finish == "tool_calls"
        call = calls[0]
        call_id, name, args = call["id"], call["name"], call["args"]
    else:
        r = client.chat.completions.create(model=model, messages=msgs, tools=tools)
        assert r.choices[0].finish_reason == "tool_calls"
        tc = r.choices[0].message.tool_calls[0]
        call_id, name, args = tc.id, tc.function.name, tc.function.arguments
    assert name == "get_weather"
    assert "city" in json.loads(args)
    msgs.append(
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}
            ],
        }
    )
    msgs.append({"role": "tool", "tool_call_id": call_id, "content": "Sunny, 21C"})
    r2 = client.chat.completions.create(model=model, messages=msgs, tools=tools)
    assert r2.choices[0].finish_reason == "stop" and r2.choices[0].message.content


@pytest.mark.parametrize("model", KINDS)
@pytest.mark.parametrize("streamed", [False, True])
def test_anthropic_client_tool_round_trip(stack: Stack, model: str, streamed: bool) -> None:
    client = ant(stack)
    tools = [
        {
            "name": WEATHER["name"],
            "description": WEATHER["description"],
            "input_schema": WEATHER["parameters"],
        }
    ]
    msgs: list[dict[str, object]] = [{"role": "user", "content": "Weather in Paris?"}]
    if streamed:
        with client.messages.stream(model=model, max_tokens=100, messages=msgs, tools=tools) as s:
            m = s.get_final_message()
    else:
        m = client.messages.create(model=model, max_tokens=100, messages=msgs, tools=tools)
    assert m.stop_reason == "tool_use"
    use = next(b for b in m.content if b.type == "tool_use")
    assert use.name == "get_weather" and "city" in use.input
    msgs.append(
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in m.content]}
    )
    msgs.append(
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "Sunny, 21C"}],
        }
    )
    m2 = client.messages.create(model=model, max_tokens=100, messages=msgs, tools=tools)
    assert m2.stop_reason == "end_turn" and m2.content[0].type == "text"


@pytest.mark.parametrize("model", KINDS)
def test_openai_client_image_input(stack: Stack, model: str) -> None:
    png = (
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNk"
        "YAAAAAYAAjCB0C8AAAAASUVORK5CYII="
    )
    r = oai(stack).chat.completions.create(
        model=model,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}},
                ],
            }
        ],
    )
    assert r.choices[0].message.content
    assert r.usage is not None and r.usage.prompt_tokens >= 85

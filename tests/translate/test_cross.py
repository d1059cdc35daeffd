"""Across protocols: what one API's upstream says reaches the other API's official SDK intact."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
import openai
from aiohttp import web
from anthropic.types import Message as SdkMessage
from hypothesis import given
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from tokenway.domain.types import ChatRequest, StreamEvent
from tokenway.translate import anthropic_messages as am
from tokenway.translate import openai_chat as oc
from tokenway.translate.sse import SSEParser, frame

from .test_anthropic_messages import UPSTREAM_EVENTS, sdk_accumulate
from .test_openai_chat import chat_requests, chunk, content_view, sse_server


def upstream_bytes(events: list[dict[str, Any]], *, named: bool, done: bool) -> bytes:
    out = b"".join(frame(e, e["type"] if named else None) for e in events)
    return out + (b"data: [DONE]\n\n" if done else b"")


def decode_bytes(data: bytes, dec: am.StreamDecoder | oc.StreamDecoder) -> list[StreamEvent]:
    """Upstream SSE bytes, cut into awkward pieces, through a decoder."""
    parser = SSEParser()
    events: list[StreamEvent] = []
    for i in range(0, len(data), 7):
        for name, raw in parser.feed(data[i : i + 7]):
            if raw != "[DONE]":
                events += dec.feed(name, msgspec.json.decode(raw))
    return events + dec.finish()


async def openai_client_chunks(data: bytes) -> list[ChatCompletionChunk]:
    async with (
        sse_server(data) as url,
        openai.AsyncOpenAI(api_key="k", base_url=url + "/v1", max_retries=0) as client,
    ):
        stream = await client.chat.completions.create(
            model="alias", messages=[{"role": "user", "content": "q"}], stream=True
        )
        return [c async for c in stream]


async def test_anthropic_stream_to_openai_client() -> None:
    events = decode_bytes(
        upstream_bytes(UPSTREAM_EVENTS, named=True, done=False), am.StreamDecoder()
    )
    enc = oc.StreamEncoder("alias", include_usage=True)
    data = b"".join(enc.encode(e) for e in events) + enc.finish()
    chunks = await openai_client_chunks(data)
    for c in chunks:  # also valid standalone, as the brief's type check
        ChatCompletionChunk.model_validate(c.model_dump())
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert deltas[0].role == "assistant"
    assert "".join(d.content or "" for d in deltas) == "Hello"
    assert "".join(getattr(d, "reasoning_content", None) or "" for d in deltas) == "hm"
    calls = [tc for d in deltas for tc in d.tool_calls or []]
    assert calls[0].id == "tu_1" and calls[0].function and calls[0].function.name == "get"
    assert {tc.index for tc in calls} == {0}
    args = "".join(tc.function.arguments or "" for tc in calls if tc.function)
    assert msgspec.json.decode(args) == {"q": "x"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    usage = chunks[-1].usage
    assert usage is not None and chunks[-1].choices == []
    assert (usage.prompt_tokens, usage.completion_tokens) == (112, 42)
    assert usage.prompt_tokens_details and usage.prompt_tokens_details.cached_tokens == 100


OPENAI_CHUNKS = [
    chunk({"role": "assistant", "content": ""}),
    chunk({"content": "Let me "}),
    chunk({"content": "check."}),
    chunk({"tool_calls": [{"index": 0, "id": "call_a", "type": "function",
                           "function": {"name": "lookup", "arguments": ""}}]}),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"id": '}}]}),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": "7}"}}]}),
    chunk({"tool_calls": [{"index": 1, "id": "call_b", "type": "function",
                           "function": {"name": "lookup", "arguments": '{"id": 8}'}}]}),
    chunk({}, "tool_calls"),
    {"id": "chatcmpl-9", "object": "chat.completion.chunk", "model": "gpt", "choices": [],
     "usage": {"prompt_tokens": 1000, "completion_tokens": 30,
               "prompt_tokens_details": {"cached_tokens": 600},
               "completion_tokens_details": {"reasoning_tokens": 10}}},
]  # fmt: skip


async def test_openai_stream_to_anthropic_client() -> None:
    events = decode_bytes(upstream_bytes(OPENAI_CHUNKS, named=False, done=True), oc.StreamDecoder())
    enc = am.StreamEncoder("alias")
    data = b"".join(enc.encode(e) for e in events) + enc.finish()
    names, msg = await sdk_accumulate(data)
    assert names.count("content_block_start") == 3
    assert [b.type for b in msg.content] == ["text", "tool_use", "tool_use"]
    assert msg.content[0].type == "text" and msg.content[0].text == "Let me check."
    tools = [b for b in msg.content if b.type == "tool_use"]
    assert [(t.id, t.input) for t in tools] == [("call_a", {"id": 7}), ("call_b", {"id": 8})]
    assert msg.stop_reason == "tool_use" and msg.model == "alias"
    assert (msg.usage.input_tokens, msg.usage.cache_read_input_tokens) == (400, 600)
    assert msg.usage.output_tokens == 30


async def test_cut_upstream_stream_still_ends_cleanly() -> None:
    cut = upstream_bytes(UPSTREAM_EVENTS[:12], named=True, done=False)
    events = decode_bytes(cut[:-5], am.StreamDecoder())  # mid text block, mid frame
    enc = oc.StreamEncoder("alias", include_usage=True)
    chunks = await openai_client_chunks(b"".join(enc.encode(e) for e in events) + enc.finish())
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello"
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 112

    events = decode_bytes(
        upstream_bytes(OPENAI_CHUNKS[:5], named=False, done=False), oc.StreamDecoder()
    )
    enc2 = am.StreamEncoder("alias")
    _, msg = await sdk_accumulate(b"".join(enc2.encode(e) for e in events) + enc2.finish())
    assert [b.type for b in msg.content] == ["text", "tool_use"]


def test_anthropic_response_to_openai_body() -> None:
    resp = am.parse_response(
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude",
            "content": [
                {"type": "thinking", "thinking": "t", "signature": "s"},
                {"type": "text", "text": "answer"},
                {"type": "tool_use", "id": "tu", "name": "f", "input": {"a": 1}},
            ],
            "stop_reason": "max_tokens",
            "stop_sequence": None,
            "usage": {"input_tokens": 5, "cache_creation_input_tokens": 20, "output_tokens": 9},
        }
    )
    cc = ChatCompletion.model_validate(oc.encode_response(resp, "alias"))
    choice = cc.choices[0]
    assert choice.finish_reason == "length" and choice.message.content == "answer"
    assert choice.message.tool_calls and choice.message.tool_calls[0].id == "tu"
    assert cc.usage and (cc.usage.prompt_tokens, cc.usage.completion_tokens) == (25, 9)


def test_openai_response_to_anthropic_body() -> None:
    resp = oc.parse_response(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1,
            "model": "gpt",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "content_filter",
                    "message": {"role": "assistant", "content": "partial"},
                }
            ],
            "usage": {
                "prompt_tokens": 50,
                "completion_tokens": 4,
                "prompt_tokens_details": {"cached_tokens": 32},
            },
        }
    )
    msg = SdkMessage.model_validate(am.encode_response(resp, "alias"))
    assert msg.stop_reason == "refusal"
    assert msg.content[0].type == "text" and msg.content[0].text == "partial"
    assert (msg.usage.input_tokens, msg.usage.cache_read_input_tokens) == (18, 32)


@given(chat_requests())
def test_requests_survive_both_hops(req: ChatRequest) -> None:
    def wire(x: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(x))
        return out

    via_anthropic = oc.parse_request(
        wire(oc.encode_request(am.parse_request(wire(am.encode_request(req, "a"))), "o"))
    )
    via_openai = am.parse_request(
        wire(am.encode_request(oc.parse_request(wire(oc.encode_request(req, "o"))), "a"))
    )
    for back in (via_anthropic, via_openai):
        assert content_view(back) == content_view(req)
        assert back.system == req.system
        assert (back.stop, back.tools) == (req.stop, req.tools)


async def test_openai_sdk_round_trip_through_anthropic_shapes() -> None:
    """What the OpenAI SDK sends becomes an Anthropic body; an Anthropic answer reaches the SDK."""
    seen: list[dict[str, Any]] = []
    upstream = {
        "id": "msg_u",
        "type": "message",
        "role": "assistant",
        "model": "claude",
        "content": [{"type": "text", "text": "done"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 3, "cache_read_input_tokens": 4, "output_tokens": 2},
    }

    async def handle(request: web.Request) -> web.Response:
        seen.append(await request.json())
        answer = oc.encode_response(am.parse_response(upstream), "alias")
        return web.json_response(answer)

    async with (
        json_server(handle) as url,
        openai.AsyncOpenAI(api_key="k", base_url=url + "/v1", max_retries=0) as client,
    ):
        cc = await client.chat.completions.create(
            model="alias",
            messages=[{"role": "developer", "content": "sys"}, {"role": "user", "content": "q"}],
            max_completion_tokens=64,
            tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}],
            tool_choice="auto",
            stop="END",
        )
    assert cc.choices[0].message.content == "done"
    assert cc.usage and cc.usage.prompt_tokens == 7
    out = am.encode_request(oc.parse_request(seen[0]), "claude")
    assert out == {
        "model": "claude",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "q"}]}],
        "system": [{"type": "text", "text": "sys"}],
        "stop_sequences": ["END"],
        "tools": [{"name": "f", "input_schema": {}}],
        "tool_choice": {"type": "auto"},
    }


@contextlib.asynccontextmanager
async def json_server(
    handle: Callable[[web.Request], Awaitable[web.Response]],
) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def test_sse_parser_line_endings_comments_and_multiline() -> None:
    p = SSEParser()
    got = p.feed(b': keep-alive\r\nevent: a\r\ndata: {"x":\r')
    assert got == []
    got = p.feed(b"\ndata: 1}\r\n\r\nid: 3\ndata:[DONE]\n\n")
    assert got == [("a", '{"x":\n1}'), (None, "[DONE]")]
    assert p.feed(b"event: tail\ndata: end") == []
    assert p.close() == [("tail", "end")]
    assert frame({"a": 1}, "e") == b'event: e\ndata: {"a":1}\n\n'


def test_both_protocols_expose_the_same_api() -> None:
    api = {
        "parse_request",
        "encode_request",
        "parse_usage",
        "encode_usage",
        "parse_response",
        "encode_response",
        "StreamDecoder",
        "StreamEncoder",
    }
    assert api <= set(oc.__all__) and api <= set(am.__all__)
    for mod in (oc, am):
        for name in mod.__all__:
            assert getattr(mod, name) is not None

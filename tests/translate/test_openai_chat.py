"""OpenAI chat completions translation: requests, usage, responses, streams."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from tokenway.domain.types import (
    BlockStop,
    ChatRequest,
    ChatResponse,
    ImageBlock,
    Message,
    StreamEnd,
    StreamStart,
    TextBlock,
    TextDelta,
    ThinkingBlock,
    ThinkingDelta,
    ToolArgsDelta,
    ToolCallStart,
    ToolChoice,
    ToolResultBlock,
    ToolSpec,
    ToolUseBlock,
    Usage,
    UsageUpdate,
)
from tokenway.errors import BadRequest, UpstreamError
from tokenway.translate import openai_chat as oc
from tokenway.translate.sse import SSEParser


def body(**kw: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": "hi"}], **kw}


# ---- parse_request ----------------------------------------------------------------------


def test_full_request_parses_every_field() -> None:
    req = oc.parse_request(
        {
            "model": "chat-fast",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "developer", "content": [{"type": "text", "text": "dev"}]},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "look"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,QUJD"}},
                        {
                            "type": "image_url",
                            "image_url": {"url": "https://x/y.png", "detail": "low"},
                        },
                    ],
                },
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get", "arguments": '{"q": 1}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "42"},
            ],
            "max_completion_tokens": 100,
            "max_tokens": 5,
            "temperature": 0.5,
            "top_p": 1,
            "stop": "END",
            "tools": [
                {"type": "function", "function": {"name": "get", "parameters": {"type": "object"}}}
            ],
            "tool_choice": {"type": "function", "function": {"name": "get"}},
            "parallel_tool_calls": False,
            "response_format": {"type": "json_object"},
            "reasoning_effort": "low",
            "stream": True,
            "stream_options": {"include_usage": True},
            "user": "u1",
            "seed": 7,
        }
    )
    assert req.model == "chat-fast"
    assert [b.text for b in req.system] == ["be brief", "dev"]
    user, asst, tool = req.messages
    assert user.content == [
        TextBlock(text="look"),
        ImageBlock(media_type="image/png", data="QUJD"),
        ImageBlock(url="https://x/y.png", detail="low"),
    ]
    assert asst.content == [ToolUseBlock(id="call_1", name="get", input={"q": 1})]
    assert tool.role == "user"
    assert tool.content == [ToolResultBlock(tool_use_id="call_1", content=[TextBlock(text="42")])]
    assert req.max_tokens == 100  # max_completion_tokens wins
    assert (req.temperature, req.top_p, req.stop) == (0.5, 1.0, ["END"])
    assert req.tools == [ToolSpec(name="get", parameters={"type": "object"})]
    assert req.tool_choice == ToolChoice(mode="tool", name="get", disable_parallel=True)
    assert req.response_format == {"type": "json_object"}
    assert (req.reasoning_effort, req.stream, req.user) == ("low", True, "u1")
    assert req.extras == {"stream_options": {"include_usage": True}, "seed": 7}


def test_legacy_max_tokens_and_stop_list() -> None:
    req = oc.parse_request(body(max_tokens=9, stop=["a", "b"], tool_choice="required"))
    assert req.max_tokens == 9
    assert req.stop == ["a", "b"]
    assert req.tool_choice == ToolChoice(mode="required")


def test_assistant_reasoning_content_and_refusal_parts() -> None:
    req = oc.parse_request(
        body(
            messages=[
                {"role": "user", "content": "q"},
                {
                    "role": "assistant",
                    "reasoning_content": "hmm",
                    "content": [{"type": "refusal", "refusal": "no"}],
                },
            ]
        )
    )
    assert req.messages[1].content == [ThinkingBlock(thinking="hmm"), TextBlock(text="no")]


@pytest.mark.parametrize(
    ("patch", "param", "words"),
    [
        ({"model": None}, "model", "is required"),
        ({"model": 3}, "model", "must be a string"),
        ({"messages": []}, "messages", "non-empty list"),
        ({"messages": "hi"}, "messages", "non-empty list"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role", "unknown role"),
        ({"messages": [{"content": "x"}]}, "messages[0].role", "is required"),
        ({"messages": [{"role": "user"}]}, "messages[0].content", "is required"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content", "string or a list"),
        (
            {"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]},
            "messages[0].content[0].type",
            "not supported",
        ),
        (
            {"messages": [{"role": "user", "content": ["x"]}]},
            "messages[0].content[0]",
            "with a type",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "data:x"}}],
                    }
                ]
            },
            "messages[0].content[0].image_url.url",
            "data URL",
        ),
        ({"messages": [{"role": "assistant"}]}, "messages[0].content", "content or tool_calls"),
        (
            {
                "messages": [
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {"id": "c", "function": {"name": "f", "arguments": "{oops"}}
                        ],
                    }
                ]
            },
            "messages[0].tool_calls[0].function.arguments",
            "not valid JSON",
        ),
        (
            {
                "messages": [
                    {
                        "role": "assistant",
                        "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "[1]"}}],
                    }
                ]
            },
            "messages[0].tool_calls[0].function.arguments",
            "JSON object",
        ),
        (  # was a 500: RecursionError from the JSON decoder
            {
                "messages": [
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {
                                "id": "c",
                                "function": {
                                    "name": "f",
                                    "arguments": '{"a":' + "[" * 100_000 + "]" * 100_000 + "}",
                                },
                            }
                        ],
                    }
                ]
            },
            "messages[0].tool_calls[0].function.arguments",
            "nested too deeply",
        ),
        (
            {"messages": [{"role": "tool", "content": "x"}]},
            "messages[0].tool_call_id",
            "is required",
        ),
        (
            {"messages": [{"role": "system", "content": [{"type": "image_url"}]}]},
            "messages[0].content[0]",
            "text content part",
        ),
        ({"max_tokens": 0}, "max_tokens", "greater than 0"),
        ({"max_completion_tokens": -1}, "max_completion_tokens", "greater than 0"),
        ({"max_tokens": "10"}, "max_tokens", "integer"),
        ({"max_tokens": True}, "max_tokens", "integer"),
        ({"n": 2}, "n", "n=1"),
        ({"stop": 3}, "stop", "string or a list"),
        ({"temperature": "hot"}, "temperature", "number"),
        ({"stream": "yes"}, "stream", "boolean"),
        ({"tools": {}}, "tools", "list"),
        ({"tools": [{"type": "code_interpreter"}]}, "tools[0].type", "not supported"),
        ({"tools": [{"type": "function", "function": {}}]}, "tools[0].function.name", "required"),
        ({"tool_choice": "sometimes"}, "tool_choice", "must be"),
        ({"tool_choice": {"type": "function", "function": {}}}, "tool_choice.function.name", ""),
        ({"parallel_tool_calls": "no"}, "parallel_tool_calls", "boolean"),
        ({"response_format": {"type": "xml"}}, "response_format.type", "unknown type"),
        ({"response_format": "json"}, "response_format", "with a type"),
        ({"stream_options": 1}, "stream_options", "object"),
        ({"user": 5}, "user", "string"),
    ],
)
def test_bad_requests_name_the_field(patch: dict[str, Any], param: str, words: str) -> None:
    with pytest.raises(BadRequest) as ei:
        oc.parse_request(body(**patch))
    assert ei.value.param == param
    assert ei.value.status == 400
    assert words in ei.value.message
    assert ei.value.message.startswith(param)


def test_non_object_body() -> None:
    with pytest.raises(BadRequest):
        oc.parse_request([])  # type: ignore[arg-type]


# ---- encode_request ---------------------------------------------------------------------


def test_encode_request_shapes() -> None:
    req = ChatRequest(
        model="alias",
        system=[TextBlock(text="sys")],
        messages=[
            Message(
                role="user",
                content=[TextBlock(text="a"), ImageBlock(media_type="image/png", data="QQ==")],
            ),
            Message(
                role="assistant",
                content=[
                    ThinkingBlock(thinking="t", signature="s"),
                    TextBlock(text="calling"),
                    ToolUseBlock(id="c1", name="f", input={"x": 1}),
                ],
            ),
            Message(
                role="user",
                content=[
                    ToolResultBlock(
                        tool_use_id="c1", content=[TextBlock(text="bad")], is_error=True
                    ),
                    TextBlock(text="and?"),
                ],
            ),
        ],
        max_tokens=50,
        stop=["x"],
        tools=[ToolSpec(name="f", description="does f")],
        tool_choice=ToolChoice(mode="required", disable_parallel=True),
        reasoning_effort="max",
        stream=True,
        user="u",
        extras={"seed": 1, "top_k": 5, "metadata": {"a": "b"}},
    )
    out = oc.encode_request(req, "gpt-x")
    assert out["model"] == "gpt-x"
    assert out["messages"] == [
        {"role": "system", "content": "sys"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "a"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,QQ=="}},
            ],
        },
        {
            "role": "assistant",
            "content": "calling",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"x":1}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "Error: bad"},
        {"role": "user", "content": "and?"},
    ]
    assert out["max_completion_tokens"] == 50
    assert out["stop"] == ["x"]
    assert out["tools"][0]["function"]["description"] == "does f"
    assert out["tool_choice"] == "required"
    assert out["parallel_tool_calls"] is False
    assert out["reasoning_effort"] == "xhigh"
    assert out["stream_options"] == {"include_usage": True}
    assert out["user"] == "u"
    assert out["seed"] == 1
    assert "top_k" not in out and "metadata" not in out
    assert "max_tokens" in oc.encode_request(req, "m", legacy_max_tokens=True)


def test_encode_request_tool_choice_without_tools_is_dropped() -> None:
    req = ChatRequest(model="m", messages=[], tool_choice=ToolChoice(mode="none"))
    out = oc.encode_request(req, "m")
    assert "tool_choice" not in out and "stream" not in out and "stream_options" not in out


_text = st.text(min_size=1, max_size=20).filter(lambda s: s.strip() != "")
_ident = st.text("abcdefghij_", min_size=1, max_size=8)
_json_obj = st.dictionaries(_ident, st.integers() | _text | st.booleans(), max_size=3)


@st.composite
def chat_requests(draw: st.DrawFn) -> ChatRequest:
    """Requests whose text and tool content every protocol can carry."""
    messages: list[Message] = []
    pending: list[str] = []
    for i in range(draw(st.integers(1, 4))):
        results = [
            ToolResultBlock(tool_use_id=cid, content=[TextBlock(text=draw(_text))])
            for cid in pending
        ]
        texts = [TextBlock(text=t) for t in draw(st.lists(_text, min_size=1, max_size=2))]
        messages.append(Message(role="user", content=[*results, *texts]))
        a_texts = [TextBlock(text=t) for t in draw(st.lists(_text, max_size=2))]
        calls = [
            ToolUseBlock(id=f"call_{i}_{j}", name=draw(_ident), input=draw(_json_obj))
            for j in range(draw(st.integers(0, 2)))
        ]
        if a_texts or calls:
            messages.append(Message(role="assistant", content=[*a_texts, *calls]))
        pending = [c.id for c in calls]
    return ChatRequest(
        model="m",
        messages=messages,
        system=[TextBlock(text=t) for t in draw(st.lists(_text, max_size=2))],
        max_tokens=draw(st.none() | st.integers(1, 10_000)),
        stop=draw(st.lists(_text, max_size=2)),
        tools=[ToolSpec(name=n) for n in draw(st.lists(_ident, max_size=2, unique=True))],
    )


def content_view(req: ChatRequest) -> list[tuple[str, list[Any]]]:
    """Messages merged by role, as comparable plain data."""
    merged: list[tuple[str, list[Any]]] = []
    for m in req.messages:
        blocks = [msgspec.to_builtins(b) for b in m.content]
        if merged and merged[-1][0] == m.role:
            merged[-1][1].extend(blocks)
        else:
            merged.append((m.role, blocks))
    for role, blocks in merged:
        if role == "user":
            blocks.sort(key=lambda b: b["type"] != "tool_result")
    return merged


@given(chat_requests())
def test_request_round_trip(req: ChatRequest) -> None:
    back = oc.parse_request(msgspec.json.decode(msgspec.json.encode(oc.encode_request(req, "m"))))
    assert content_view(back) == content_view(req)
    assert back.system == req.system
    assert (back.max_tokens, back.stop, back.tools) == (req.max_tokens, req.stop, req.tools)


# ---- usage ------------------------------------------------------------------------------


def test_usage_golden_openai() -> None:
    u = oc.parse_usage(
        {
            "prompt_tokens": 1000,
            "completion_tokens": 300,
            "total_tokens": 1300,
            "prompt_tokens_details": {"cached_tokens": 600, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 200},
        }
    )
    assert u == Usage(
        input_tokens=1000, cache_read_tokens=600, output_tokens=300, reasoning_tokens=200
    )


def test_usage_golden_deepseek() -> None:
    u = oc.parse_usage(
        {
            "prompt_tokens": 100,
            "completion_tokens": 10,
            "prompt_cache_hit_tokens": 64,
            "prompt_cache_miss_tokens": 36,
        }
    )
    assert (u.input_tokens, u.cache_read_tokens) == (100, 64)
    # cached_tokens, when present, wins over the DeepSeek field
    both = {"prompt_tokens": 100, "prompt_tokens_details": {"cached_tokens": 5}}
    assert oc.parse_usage({**both, "prompt_cache_hit_tokens": 64}).cache_read_tokens == 5


def test_usage_nulls_and_junk_are_zero() -> None:
    u = oc.parse_usage(
        {
            "prompt_tokens": None,
            "completion_tokens": -4,
            "prompt_tokens_details": None,
            "completion_tokens_details": {"reasoning_tokens": "many"},
        }
    )
    assert u == Usage()
    assert oc.parse_usage({}) == Usage()


_count = st.none() | st.integers(-5, 10**9) | st.floats(allow_nan=True) | st.text(max_size=2)


@given(
    st.fixed_dictionaries(
        {},
        optional={
            "prompt_tokens": _count,
            "completion_tokens": _count,
            "prompt_cache_hit_tokens": _count,
            "prompt_tokens_details": st.none()
            | st.fixed_dictionaries({}, optional={"cached_tokens": _count}),
            "completion_tokens_details": st.none()
            | st.fixed_dictionaries({}, optional={"reasoning_tokens": _count}),
        },
    )
)
def test_usage_invariants(raw: dict[str, Any]) -> None:
    u = oc.parse_usage(raw)
    fields = msgspec.structs.asdict(u)
    assert all(v >= 0 for v in fields.values() if isinstance(v, int))
    assert u.cache_read_tokens + u.cache_write_tokens <= u.input_tokens
    assert u.reasoning_tokens <= u.output_tokens


@given(
    st.builds(
        lambda i, c, o, r: Usage(input_tokens=i, cache_read_tokens=min(c, i), output_tokens=o,
                                 reasoning_tokens=min(r, o)),
        st.integers(0, 10**8), st.integers(0, 10**8), st.integers(0, 10**8), st.integers(0, 10**8),
    )
)  # fmt: skip
def test_usage_encode_is_inverse(u: Usage) -> None:
    assert oc.parse_usage(oc.encode_usage(u)) == u


# ---- responses --------------------------------------------------------------------------


def test_parse_response() -> None:
    resp = oc.parse_response(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "model": "gpt-4o",
            "service_tier": "default",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "tool_calls",
                    "message": {
                        "role": "assistant",
                        "content": "ok",
                        "reasoning_content": "why",
                        "tool_calls": [
                            {
                                "id": "c",
                                "type": "function",
                                "function": {"name": "f", "arguments": '{"a":2}'},
                            },
                            {
                                "id": "d",
                                "type": "function",
                                "function": {"name": "g", "arguments": '{"a":'},
                            },
                        ],
                    },
                }
            ],
            "usage": {"prompt_tokens": 5, "completion_tokens": 2},
        }
    )
    assert resp.content == [
        ThinkingBlock(thinking="why"),
        TextBlock(text="ok"),
        ToolUseBlock(id="c", name="f", input={"a": 2}),
        ToolUseBlock(id="d", name="g", input={"_raw_arguments": '{"a":'}),
    ]
    assert resp.stop_reason == "tool_use"
    assert resp.usage.input_tokens == 5 and resp.usage.service_tier == "default"


@pytest.mark.parametrize(
    ("finish", "stop"),
    [("stop", "end_turn"), ("length", "max_tokens"), ("tool_calls", "tool_use"),
     ("content_filter", "content_filter"), (None, "end_turn")],
)  # fmt: skip
def test_finish_reasons(finish: str | None, stop: str) -> None:
    body = {
        "id": "x",
        "model": "m",
        "choices": [{"message": {"content": ""}, "finish_reason": finish}],
    }
    assert oc.parse_response(body).stop_reason == stop


def test_encode_response() -> None:
    resp = ChatResponse(
        id="r1",
        model="upstream",
        content=[
            ThinkingBlock(thinking="t"),
            TextBlock(text="a"),
            TextBlock(text="b"),
            ToolUseBlock(id="c", name="f", input={"k": [1]}),
        ],
        stop_reason="tool_use",
        usage=Usage(input_tokens=10, cache_read_tokens=4, output_tokens=3, reasoning_tokens=1),
    )
    out = oc.encode_response(resp, "alias")
    cc = ChatCompletion.model_validate(out)
    assert cc.model == "alias"
    msg = cc.choices[0].message
    assert msg.content == "ab"
    assert msg.tool_calls is not None and msg.tool_calls[0].function.arguments == '{"k":[1]}'
    assert cc.choices[0].finish_reason == "tool_calls"
    assert cc.usage is not None and cc.usage.total_tokens == 13
    assert out["choices"][0]["message"]["reasoning_content"] == "t"
    back = oc.parse_response(out)
    assert back.content == [resp.content[0], TextBlock(text="ab"), resp.content[3]]
    assert back.usage == resp.usage


# ---- streams ----------------------------------------------------------------------------


def chunk(delta: dict[str, Any], finish: str | None = None, **kw: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-9",
        "object": "chat.completion.chunk",
        "model": "gpt",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        **kw,
    }


def decode_all(frames: list[dict[str, Any]]) -> list[Any]:
    dec = oc.StreamDecoder()
    events: list[Any] = []
    for f in frames:
        events += dec.feed(None, f)
    return events + dec.finish()


def test_decoder_text_and_parallel_tools() -> None:
    frames = [
        chunk({"role": "assistant", "content": ""}),
        chunk({"reasoning_content": "think"}),
        chunk({"content": "Hi"}),
        chunk({"tool_calls": [{"index": 0, "id": "a", "type": "function",
                               "function": {"name": "f", "arguments": ""}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"x"'}}]}),
        chunk({"tool_calls": [{"index": 1, "id": "b",
                               "function": {"name": "g", "arguments": "{}"}}]}),
        chunk({}, "tool_calls"),
        {"id": "chatcmpl-9", "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3}},
    ]  # fmt: skip
    assert decode_all(frames) == [
        StreamStart(id="chatcmpl-9", model="gpt"),
        ThinkingDelta(index=0, text="think"),
        BlockStop(index=0),
        TextDelta(index=1, text="Hi"),
        BlockStop(index=1),
        ToolCallStart(index=2, id="a", name="f"),
        ToolArgsDelta(index=2, partial_json='{"x"'),
        BlockStop(index=2),
        ToolCallStart(index=3, id="b", name="g"),
        ToolArgsDelta(index=3, partial_json="{}"),
        UsageUpdate(usage=Usage(input_tokens=7, output_tokens=3)),
        BlockStop(index=3),
        StreamEnd(stop_reason="tool_use"),
    ]


def test_decoder_error_frame_raises_and_finish_is_once() -> None:
    dec = oc.StreamDecoder()
    with pytest.raises(UpstreamError, match="overloaded"):
        dec.feed(None, {"error": {"message": "overloaded"}})
    assert dec.finish() == [StreamEnd()]
    assert dec.finish() == []


@contextlib.asynccontextmanager
async def sse_server(data: bytes) -> AsyncIterator[str]:
    """A real HTTP server on 127.0.0.1 answering every POST with `data` as an SSE stream."""

    async def handle(request: web.Request) -> web.Response:
        return web.Response(body=data, content_type="text/event-stream")

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


def parse_sse(data: bytes) -> list[tuple[str | None, str]]:
    p = SSEParser()
    return p.feed(data) + p.close()


def test_encoder_sequence_validates_with_sdk() -> None:
    enc = oc.StreamEncoder("alias", include_usage=True, response_id="chatcmpl-z")
    out = b"".join(
        enc.encode(e)
        for e in [
            StreamStart(id="up", model="up"),
            TextDelta(index=0, text="Hel"),
            TextDelta(index=0, text=""),
            BlockStop(index=0),
            ToolCallStart(index=1, id="c", name="f"),
            ToolArgsDelta(index=1, partial_json='{"a":'),
            ToolArgsDelta(index=1, partial_json="1}"),
            ToolArgsDelta(index=7, partial_json="orphan"),
            UsageUpdate(usage=Usage(input_tokens=9)),
            UsageUpdate(usage=Usage(output_tokens=4)),
            StreamEnd(stop_reason="tool_use"),
        ]
    )
    out += enc.finish()
    frames = parse_sse(out)
    assert frames[-1] == (None, "[DONE]")
    chunks = [ChatCompletionChunk.model_validate_json(d) for _, d in frames[:-1]]
    assert {c.id for c in chunks} == {"chatcmpl-z"} and {c.model for c in chunks} == {"alias"}
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hel"
    calls = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert calls[0].id == "c" and calls[0].function and calls[0].function.name == "f"
    assert "".join(tc.function.arguments or "" for tc in calls if tc.function) == '{"a":1}'
    assert chunks[-2].choices[0].finish_reason == "tool_calls"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (9, 4)
    assert enc.finish() == b""


def test_encoder_without_usage_and_explicit_final_usage() -> None:
    enc = oc.StreamEncoder("m")
    out = enc.encode(TextDelta(index=0, text="x")) + enc.finish(Usage(input_tokens=1))
    assert b'"usage"' not in out and out.endswith(b"data: [DONE]\n\n")
    assert b'"finish_reason":"stop"' in out
    enc = oc.StreamEncoder("m", include_usage=True)
    out = enc.encode(UsageUpdate(usage=Usage(input_tokens=5))) + enc.finish(Usage(input_tokens=2))
    assert b'"prompt_tokens":2' in out


def test_encoder_error_frame_raises_in_sdk_shape() -> None:
    enc = oc.StreamEncoder("m")
    ((event, data),) = parse_sse(enc.error("upstream broke"))
    assert event is None
    assert msgspec.json.decode(data)["error"]["message"] == "upstream broke"
    assert enc.encode(TextDelta(index=0, text="late")) == b""

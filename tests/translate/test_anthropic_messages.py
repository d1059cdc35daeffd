"""Anthropic Messages translation: requests, usage, responses, streams."""

from __future__ import annotations

from typing import Any

import anthropic
import msgspec
import pytest
from anthropic.types import Message as SdkMessage
from anthropic.types import RawMessageStreamEvent
from anthropic.types import Usage as SdkUsage
from hypothesis import given
from hypothesis import strategies as st
from pydantic import TypeAdapter

from tokenway.domain.types import (
    BlockStop,
    ChatRequest,
    ChatResponse,
    ImageBlock,
    Message,
    RedactedThinkingBlock,
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
from tokenway.errors import BadRequest, UpstreamError, UpstreamStatus
from tokenway.translate import anthropic_messages as am

from .test_openai_chat import chat_requests, content_view, parse_sse, sse_server

EPH = {"type": "ephemeral"}


def body(**kw: Any) -> dict[str, Any]:
    return {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}], **kw}


# ---- parse_request ----------------------------------------------------------------------


def test_full_request_parses_every_field() -> None:
    req = am.parse_request(
        {
            "model": "claude",
            "max_tokens": 2000,
            "system": [{"type": "text", "text": "sys", "cache_control": EPH}],
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "see", "cache_control": EPH},
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": "QQ=="},
                        },
                        {"type": "image", "source": {"type": "url", "url": "https://x/i.png"}},
                    ],
                },
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "hm", "signature": "sig"},
                        {"type": "redacted_thinking", "data": "xyz"},
                        {"type": "tool_use", "id": "tu1", "name": "f", "input": {"a": 1}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "tu1",
                            "content": "out",
                            "is_error": True,
                        },
                        {
                            "type": "tool_result",
                            "tool_use_id": "tu2",
                            "content": [
                                {"type": "text", "text": "t"},
                                {"type": "image", "source": {"type": "url", "url": "u"}},
                            ],
                        },
                    ],
                },
            ],
            "tools": [
                {
                    "name": "f",
                    "description": "d",
                    "input_schema": {"type": "object"},
                    "cache_control": EPH,
                }
            ],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
            "thinking": {"type": "enabled", "budget_tokens": 1024},
            "stop_sequences": ["S"],
            "temperature": 1,
            "top_p": 0.9,
            "top_k": 5,
            "stream": True,
            "metadata": {"user_id": "u9"},
            "output_config": {
                "effort": "high",
                "format": {"type": "json_schema", "schema": {"type": "object"}},
            },
        }
    )
    assert req.system == [TextBlock(text="sys", cache_control=EPH)]
    u1, a1, u2 = req.messages
    assert u1.content == [
        TextBlock(text="see", cache_control=EPH),
        ImageBlock(media_type="image/png", data="QQ=="),
        ImageBlock(url="https://x/i.png"),
    ]
    assert a1.content == [
        ThinkingBlock(thinking="hm", signature="sig"),
        RedactedThinkingBlock(data="xyz"),
        ToolUseBlock(id="tu1", name="f", input={"a": 1}),
    ]
    assert u2.content == [
        ToolResultBlock(tool_use_id="tu1", content=[TextBlock(text="out")], is_error=True),
        ToolResultBlock(tool_use_id="tu2", content=[TextBlock(text="t"), ImageBlock(url="u")]),
    ]
    assert req.tools == [
        ToolSpec(name="f", description="d", parameters={"type": "object"}, cache_control=EPH)
    ]
    assert req.tool_choice == ToolChoice(mode="required", disable_parallel=True)
    assert (req.max_tokens, req.thinking_budget, req.stop) == (2000, 1024, ["S"])
    assert (req.temperature, req.top_p, req.stream, req.user) == (1.0, 0.9, True, "u9")
    assert req.reasoning_effort == "high"
    assert req.response_format == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": {"type": "object"}},
    }
    assert req.extras == {"top_k": 5}


def test_adaptive_thinking_kept_in_extras() -> None:
    req = am.parse_request(
        body(thinking={"type": "adaptive"}, tool_choice={"type": "tool", "name": "f"})
    )
    assert req.extras == {"thinking": {"type": "adaptive"}}
    assert req.thinking_budget is None
    assert req.tool_choice == ToolChoice(mode="tool", name="f")
    assert am.parse_request(body(thinking={"type": "disabled"})).extras == {}


@pytest.mark.parametrize(
    ("patch", "param", "words"),
    [
        ({"model": None}, "model", "is required"),
        ({"max_tokens": None}, "max_tokens", "is required"),
        ({"max_tokens": 0}, "max_tokens", "greater than 0"),
        ({"max_tokens": 1.5}, "max_tokens", "integer"),
        ({"messages": []}, "messages", "non-empty"),
        ({"messages": [{"role": "system", "content": "x"}]}, "messages[0].role", "unknown role"),
        ({"messages": [{"role": "user"}]}, "messages[0].content", "is required"),
        (
            {"messages": [{"role": "user", "content": [{"text": "x"}]}]},
            "messages[0].content[0]",
            "with a type",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "document"}]}]},
            "messages[0].content[0].type",
            "not supported",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "tool_use"}]}]},
            "messages[0].content[0].type",
            "not allowed in a user message",
        ),
        (
            {"messages": [{"role": "assistant", "content": [{"type": "tool_result"}]}]},
            "messages[0].content[0].type",
            "not allowed in a assistant message",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "text"}]}]},
            "messages[0].content[0].text",
            "is required",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image", "source": {"type": "file"}}]}
                ]
            },
            "messages[0].content[0].source.type",
            "base64",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "image"}]}]},
            "messages[0].content[0].source",
            "is required",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image", "source": {"type": "base64"}}]}
                ]
            },
            "messages[0].content[0].source.media_type",
            "is required",
        ),
        (
            {
                "messages": [
                    {
                        "role": "assistant",
                        "content": [{"type": "tool_use", "id": "a", "name": "f", "input": "x"}],
                    }
                ]
            },
            "messages[0].content[0].input",
            "object",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "tool_result", "tool_use_id": "a", "content": 3}],
                    }
                ]
            },
            "messages[0].content[0].content",
            "string or a list",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "tool_result",
                                "tool_use_id": "a",
                                "content": [{"type": "tool_use"}],
                            }
                        ],
                    }
                ]
            },
            "messages[0].content[0].content[0]",
            "text or image",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "tool_result"}]}]},
            "messages[0].content[0].tool_use_id",
            "is required",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "text", "text": "x", "cache_control": 1}]}
                ]
            },
            "messages[0].content[0].cache_control",
            "object",
        ),
        ({"system": 5}, "system", "string or a list"),
        ({"system": [{"type": "image"}]}, "system[0]", "text block"),
        ({"tools": [{"name": "f"}]}, "tools[0].input_schema", "is required"),
        (
            {"tools": [{"type": "web_search_20250305", "name": "w"}]},
            "tools[0].type",
            "not supported",
        ),
        ({"tools": "f"}, "tools", "list"),
        ({"tool_choice": {"type": "required"}}, "tool_choice.type", "must be"),
        ({"tool_choice": {"type": "tool"}}, "tool_choice.name", "is required"),
        ({"thinking": {"type": "enabled"}}, "thinking.budget_tokens", "is required"),
        ({"thinking": {}}, "thinking.type", "is required"),
        ({"stop_sequences": [1]}, "stop_sequences", "strings"),
        ({"metadata": {"user_id": 7}}, "metadata.user_id", "string"),
        ({"output_config": {"format": {"type": "xml"}}}, "output_config.format", "json_schema"),
        ({"temperature": None, "top_p": "x"}, "top_p", "number"),
        ({"stream": 1}, "stream", "boolean"),
    ],
)
def test_bad_requests_name_the_field(patch: dict[str, Any], param: str, words: str) -> None:
    with pytest.raises(BadRequest) as ei:
        am.parse_request(body(**patch))
    assert ei.value.param == param
    assert words in ei.value.message
    assert ei.value.message.startswith(param)


# ---- encode_request ---------------------------------------------------------------------


def test_encode_request_shapes() -> None:
    req = ChatRequest(
        model="alias",
        system=[TextBlock(text="sys", cache_control=EPH)],
        messages=[
            Message(role="user", content=[TextBlock(text="a")]),
            Message(role="user", content=[TextBlock(text="  "), ImageBlock(url="https://i")]),
            Message(
                role="assistant",
                content=[
                    ThinkingBlock(thinking="unsigned"),
                    TextBlock(text="calling"),
                    ToolUseBlock(id="c1", name="f", input={"x": 1}),
                ],
            ),
            Message(role="user", content=[TextBlock(text="note")]),
            Message(
                role="user",
                content=[
                    ToolResultBlock(tool_use_id="c1", content=[TextBlock(text="r")], is_error=True)
                ],
            ),
        ],
        stop=["x"],
        temperature=1.7,
        tools=[ToolSpec(name="f", cache_control=EPH)],
        tool_choice=ToolChoice(mode="tool", name="f", disable_parallel=True),
        response_format={"type": "json_object"},
        user="u",
        stream=True,
        extras={"top_k": 3, "seed": 1},
    )
    out = am.encode_request(req, "claude-x")
    assert out["model"] == "claude-x"
    assert out["max_tokens"] == am.DEFAULT_MAX_TOKENS
    assert out["system"][0] == {"type": "text", "text": "sys", "cache_control": EPH}
    assert "JSON" in out["system"][1]["text"]
    assert out["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "a"},
                {"type": "image", "source": {"type": "url", "url": "https://i"}},
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "calling"},
                {"type": "tool_use", "id": "c1", "name": "f", "input": {"x": 1}},
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "c1",
                    "is_error": True,
                    "content": [{"type": "text", "text": "r"}],
                },
                {"type": "text", "text": "note"},
            ],
        },
    ]
    assert out["temperature"] == 1.0
    assert out["stop_sequences"] == ["x"]
    assert out["tools"] == [
        {"name": "f", "input_schema": {"type": "object", "properties": {}}, "cache_control": EPH}
    ]
    assert out["tool_choice"] == {"type": "tool", "name": "f", "disable_parallel_tool_use": True}
    assert out["metadata"] == {"user_id": "u"}
    assert out["stream"] is True
    assert out["top_k"] == 3 and "seed" not in out
    assert "thinking" not in out


@pytest.mark.parametrize(
    ("effort", "budget", "max_tokens", "want_budget", "want_max"),
    [
        ("low", None, None, 1024, 5120),
        ("medium", None, None, 4096, 8192),
        ("high", None, None, 16384, 20480),
        (None, 3000, None, 3000, 7096),
        ("high", 2000, None, 2000, 6096),  # an explicit budget wins over effort
        ("high", None, 8000, 7999, 8000),  # budget must stay below max_tokens
        ("low", None, 1000, None, 1000),  # no room for thinking at all
        ("none", None, None, None, 4096),
    ],
)
def test_thinking_budget(
    effort: str | None,
    budget: int | None,
    max_tokens: int | None,
    want_budget: int | None,
    want_max: int,
) -> None:
    req = ChatRequest(
        model="m",
        messages=[Message(role="user", content=[TextBlock(text="q")])],
        reasoning_effort=effort,
        thinking_budget=budget,
        max_tokens=max_tokens,
        temperature=0.2,
    )
    out = am.encode_request(req, "m")
    assert out["max_tokens"] == want_max
    if want_budget is None:
        assert "thinking" not in out and out["temperature"] == 0.2
    else:
        assert out["thinking"] == {"type": "enabled", "budget_tokens": want_budget}
        assert "temperature" not in out  # Anthropic refuses it with thinking


def test_json_schema_instruction_and_signed_thinking_kept() -> None:
    req = ChatRequest(
        model="m",
        messages=[
            Message(role="user", content=[TextBlock(text="q")]),
            Message(role="assistant", content=[ThinkingBlock(thinking="t", signature="s")]),
        ],
        response_format={"type": "json_schema", "json_schema": {"schema": {"type": "integer"}}},
    )
    out = am.encode_request(req, "m")
    assert '{"type":"integer"}' in out["system"][0]["text"]
    assert out["messages"][1]["content"] == [
        {"type": "thinking", "thinking": "t", "signature": "s"}
    ]


@given(chat_requests())
def test_request_round_trip(req: ChatRequest) -> None:
    wire = msgspec.json.decode(msgspec.json.encode(am.encode_request(req, "m")))
    back = am.parse_request(wire)
    assert content_view(back) == content_view(req)
    assert back.system == req.system
    assert (back.stop, back.tools) == (req.stop, req.tools)
    assert back.max_tokens == (req.max_tokens or am.DEFAULT_MAX_TOKENS)


# ---- usage ------------------------------------------------------------------------------


def test_usage_golden_anthropic() -> None:
    u = am.parse_usage(
        {
            "input_tokens": 50,
            "cache_read_input_tokens": 1000,
            "cache_creation_input_tokens": 300,
            "cache_creation": {"ephemeral_5m_input_tokens": 100, "ephemeral_1h_input_tokens": 200},
            "output_tokens": 80,
            "output_tokens_details": {"thinking_tokens": 30},
            "service_tier": "standard",
        }
    )
    assert u == Usage(
        input_tokens=1350,
        cache_read_tokens=1000,
        cache_write_tokens=300,
        cache_write_1h_tokens=200,
        output_tokens=80,
        reasoning_tokens=30,
        service_tier="standard",
    )


def test_usage_split_without_total_and_nulls() -> None:
    u = am.parse_usage(
        {
            "input_tokens": 1,
            "cache_creation_input_tokens": None,
            "cache_creation": {"ephemeral_5m_input_tokens": 4, "ephemeral_1h_input_tokens": 6},
            "output_tokens": None,
        }
    )
    assert (u.input_tokens, u.cache_write_tokens, u.cache_write_1h_tokens) == (11, 10, 6)
    assert am.parse_usage({"input_tokens": None, "cache_read_input_tokens": -3}) == Usage()


_count = st.none() | st.integers(-5, 10**9) | st.floats(allow_nan=True) | st.text(max_size=2)


@given(
    st.fixed_dictionaries(
        {},
        optional={
            "input_tokens": _count,
            "output_tokens": _count,
            "cache_read_input_tokens": _count,
            "cache_creation_input_tokens": _count,
            "cache_creation": st.none()
            | st.fixed_dictionaries(
                {},
                optional={"ephemeral_5m_input_tokens": _count, "ephemeral_1h_input_tokens": _count},
            ),
            "output_tokens_details": st.none()
            | st.fixed_dictionaries({}, optional={"thinking_tokens": _count}),
        },
    )
)
def test_usage_invariants(raw: dict[str, Any]) -> None:
    u = am.parse_usage(raw)
    assert all(v >= 0 for v in msgspec.structs.astuple(u) if isinstance(v, int))
    assert u.cache_read_tokens + u.cache_write_tokens <= u.input_tokens
    assert u.cache_write_1h_tokens <= u.cache_write_tokens
    assert u.reasoning_tokens <= u.output_tokens


@st.composite
def canonical_usage(draw: st.DrawFn) -> Usage:
    read, write, fresh = (draw(st.integers(0, 10**7)) for _ in range(3))
    out = draw(st.integers(0, 10**7))
    return Usage(
        input_tokens=read + write + fresh,
        cache_read_tokens=read,
        cache_write_tokens=write,
        cache_write_1h_tokens=draw(st.integers(0, write)),
        output_tokens=out,
        reasoning_tokens=draw(st.integers(0, out)),
    )


@given(canonical_usage())
def test_usage_encode_is_inverse(u: Usage) -> None:
    wire = am.encode_usage(u)
    SdkUsage.model_validate(wire)
    assert am.parse_usage(wire) == u


# ---- responses --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wire", "canonical"),
    [
        ("end_turn", "end_turn"),
        ("max_tokens", "max_tokens"),
        ("stop_sequence", "stop_sequence"),
        ("tool_use", "tool_use"),
        ("refusal", "content_filter"),
        ("pause_turn", "end_turn"),
        ("model_context_window_exceeded", "max_tokens"),
    ],
)
def test_stop_reasons(wire: str, canonical: str) -> None:
    resp = am.parse_response({"id": "m", "model": "c", "content": [], "stop_reason": wire})
    assert resp.stop_reason == canonical


def test_response_round_trip_validates_with_sdk() -> None:
    wire = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-up",
        "content": [
            {"type": "thinking", "thinking": "t", "signature": "s"},
            {"type": "redacted_thinking", "data": "r"},
            {"type": "text", "text": "hi"},
            {"type": "server_tool_use", "id": "x", "name": "web_search", "input": {}},
            {"type": "tool_use", "id": "tu", "name": "f", "input": {"a": [1]}},
        ],
        "stop_reason": "stop_sequence",
        "stop_sequence": "END",
        "usage": {"input_tokens": 3, "cache_read_input_tokens": 7, "output_tokens": 2},
    }
    resp = am.parse_response(wire)
    assert len(resp.content) == 4 and resp.stop_sequence == "END"
    assert resp.usage.input_tokens == 10
    out = am.encode_response(resp, "alias")
    msg = SdkMessage.model_validate(out)
    assert msg.model == "alias" and msg.stop_reason == "stop_sequence"
    assert msg.usage.input_tokens == 3 and msg.usage.cache_read_input_tokens == 7
    assert am.parse_response(out).content == resp.content


def test_encode_response_maps_content_filter_and_drops_images() -> None:
    resp = ChatResponse(
        id="x",
        model="m",
        content=[ImageBlock(url="u"), TextBlock(text="no")],
        stop_reason="content_filter",
    )
    out = am.encode_response(resp, "m")
    assert out["stop_reason"] == "refusal" and out["content"] == [{"type": "text", "text": "no"}]


# ---- streams ----------------------------------------------------------------------------

UPSTREAM_EVENTS: list[dict[str, Any]] = [
    {
        "type": "message_start",
        "message": {
            "id": "msg_up",
            "type": "message",
            "role": "assistant",
            "model": "claude-up",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 12, "cache_read_input_tokens": 100, "output_tokens": 1},
        },
    },
    {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "thinking", "thinking": "", "signature": ""},
    },
    {"type": "ping"},
    {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "thinking_delta", "thinking": "hm"},
    },
    {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "signature_delta", "signature": "SIG"},
    },
    {"type": "content_block_stop", "index": 0},
    {
        "type": "content_block_start",
        "index": 1,
        "content_block": {"type": "server_tool_use", "id": "s", "name": "web_search", "input": {}},
    },
    {
        "type": "content_block_delta",
        "index": 1,
        "delta": {"type": "input_json_delta", "partial_json": "{}"},
    },
    {"type": "content_block_stop", "index": 1},
    {"type": "content_block_start", "index": 2, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 2, "delta": {"type": "text_delta", "text": "Hello"}},
    {"type": "content_block_stop", "index": 2},
    {
        "type": "content_block_start",
        "index": 3,
        "content_block": {"type": "tool_use", "id": "tu_1", "name": "get", "input": {}},
    },
    {
        "type": "content_block_delta",
        "index": 3,
        "delta": {"type": "input_json_delta", "partial_json": '{"q":'},
    },
    {
        "type": "content_block_delta",
        "index": 3,
        "delta": {"type": "input_json_delta", "partial_json": ' "x"}'},
    },
    {"type": "content_block_stop", "index": 3},
    {
        "type": "message_delta",
        "delta": {"stop_reason": "tool_use", "stop_sequence": None},
        "usage": {"output_tokens": 42},
    },
    {"type": "message_stop"},
]


def test_decoder_golden() -> None:
    dec = am.StreamDecoder()
    events: list[Any] = []
    for e in UPSTREAM_EVENTS:
        events += dec.feed(e["type"], e)
    assert dec.finish() == []
    assert events == [
        StreamStart(id="msg_up", model="claude-up"),
        UsageUpdate(usage=Usage(input_tokens=112, cache_read_tokens=100, output_tokens=1)),
        ThinkingDelta(index=0, text=""),
        ThinkingDelta(index=0, text="hm"),
        ThinkingDelta(index=0, signature="SIG"),
        BlockStop(index=0),
        TextDelta(index=1, text=""),
        TextDelta(index=1, text="Hello"),
        BlockStop(index=1),
        ToolCallStart(index=2, id="tu_1", name="get"),
        ToolArgsDelta(index=2, partial_json='{"q":'),
        ToolArgsDelta(index=2, partial_json=' "x"}'),
        BlockStop(index=2),
        UsageUpdate(usage=Usage(output_tokens=42)),
        StreamEnd(stop_reason="tool_use"),
    ]


def test_decoder_eof_closes_open_block() -> None:
    dec = am.StreamDecoder()
    dec.feed(None, UPSTREAM_EVENTS[0])
    dec.feed(None, UPSTREAM_EVENTS[9])
    assert dec.finish() == [BlockStop(index=0), StreamEnd()]


@pytest.mark.parametrize(
    ("kind", "cls", "status"),
    [
        ("overloaded_error", UpstreamStatus, 529),
        ("rate_limit_error", UpstreamStatus, 429),
        ("weird_error", UpstreamError, None),
    ],
)
def test_decoder_error_event(kind: str, cls: type[Exception], status: int | None) -> None:
    with pytest.raises(cls, match="busy") as ei:
        am.StreamDecoder().feed(
            "error", {"type": "error", "error": {"type": kind, "message": "busy"}}
        )
    assert getattr(ei.value, "upstream_status", None) == status


RAW_EVENTS = {
    "message_start",
    "message_delta",
    "message_stop",
    "content_block_start",
    "content_block_delta",
    "content_block_stop",
}


async def sdk_accumulate(data: bytes) -> tuple[list[str], SdkMessage]:
    """Serve SSE bytes to the official SDK's stream helper; return raw event names and message."""
    for event, raw in parse_sse(data):
        assert msgspec.json.decode(raw)["type"] == event  # event line and payload agree
        TypeAdapter(RawMessageStreamEvent).validate_json(raw)
    async with (
        sse_server(data) as url,
        anthropic.AsyncAnthropic(api_key="k", base_url=url, max_retries=0) as client,
        client.messages.stream(
            model="m", max_tokens=10, messages=[{"role": "user", "content": "q"}]
        ) as stream,
    ):
        names = [ev.type async for ev in stream if ev.type in RAW_EVENTS]
        msg = await stream.get_final_message()
    return names, msg


async def test_encoder_closes_blocks_without_block_stop() -> None:
    enc = am.StreamEncoder("alias", response_id="msg_gw")
    out = b"".join(
        enc.encode(e)
        for e in [
            StreamStart(id="chatcmpl-up", model="gpt"),
            ThinkingDelta(index=0, text="r"),
            TextDelta(index=1, text="Hi"),
            TextDelta(index=1, text=" there"),
            ToolCallStart(index=2, id="call_1", name="get"),
            ToolArgsDelta(index=2, partial_json='{"q":1}'),
            TextDelta(index=1, text="late"),  # block 1 is closed: dropped
            ToolCallStart(index=4, id="call_2", name="put"),
            UsageUpdate(usage=Usage(input_tokens=30, cache_read_tokens=10, output_tokens=5)),
            StreamEnd(stop_reason="tool_use"),
        ]
    )
    out += enc.finish()
    assert enc.finish() == b""
    names, msg = await sdk_accumulate(out)
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    assert names.count("content_block_start") == names.count("content_block_stop") == 4
    assert msg.id == "msg_gw" and msg.model == "alias"
    assert [b.type for b in msg.content] == ["thinking", "text", "tool_use", "tool_use"]
    assert msg.content[1].text == "Hi there"
    assert msg.content[2].input == {"q": 1} and msg.content[3].input == {}
    assert msg.stop_reason == "tool_use"
    assert (msg.usage.input_tokens, msg.usage.cache_read_input_tokens) == (20, 10)
    assert msg.usage.output_tokens == 5


async def test_encoder_start_carries_early_usage_and_finish_usage_wins() -> None:
    enc = am.StreamEncoder("m")
    out = enc.encode(StreamStart(id="msg_a", model="c"))
    out += enc.encode(UsageUpdate(usage=Usage(input_tokens=9)))
    assert out == b""
    out += enc.encode(TextDelta(index=0, text="x"))
    assert b'"input_tokens":9' in out.split(b"\n\n")[0]
    out += enc.finish(Usage(input_tokens=9, output_tokens=77))
    _, msg = await sdk_accumulate(out)
    assert msg.id == "msg_a" and msg.usage.output_tokens == 77 and msg.stop_reason == "end_turn"


async def test_encoder_empty_stream_is_still_valid() -> None:
    names, msg = await sdk_accumulate(am.StreamEncoder("m").finish())
    assert names == ["message_start", "message_delta", "message_stop"]
    assert msg.content == []


def test_encoder_error_event() -> None:
    enc = am.StreamEncoder("m")
    ((event, data),) = parse_sse(enc.error("boom", error_type="overloaded_error"))
    assert event == "error"
    assert msgspec.json.decode(data) == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "boom"},
    }
    assert enc.finish() == b""

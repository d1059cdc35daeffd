"""Gemini generateContent translation: golden requests, responses, streams, usage, errors."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokenway.domain.types import (
    BlockStop,
    ChatRequest,
    ImageBlock,
    Message,
    StreamEnd,
    StreamEvent,
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
from tokenway.errors import BadRequest, UpstreamStatus, UpstreamStreamCut
from tokenway.translate import gemini
from tokenway.translate.gemini import (
    StreamDecoder,
    clean_schema,
    encode_request,
    error_message,
    parse_response,
    parse_usage,
    retry_delay_s,
)


def user(*blocks: Any) -> Message:
    return Message(role="user", content=list(blocks))


def assistant(*blocks: Any) -> Message:
    return Message(role="assistant", content=list(blocks))


# ---- requests ---------------------------------------------------------------------------------


def test_encode_golden_request() -> None:
    req = ChatRequest(
        model="chat",
        system=[TextBlock(text="Be brief."), TextBlock(text="Use metric units.")],
        messages=[
            user(
                TextBlock(text="What is in these?"),
                ImageBlock(media_type="image/jpeg", data="AAAA"),
                ImageBlock(url="https://example.com/cat.png?size=2"),
                ImageBlock(url="data:image/webp;base64,BBBB"),
            ),
            assistant(TextBlock(text="A cat.")),
            user(TextBlock(text="And the weather?")),
        ],
        max_tokens=256,
        temperature=0.2,
        top_p=0.9,
        stop=["END"],
        tools=[
            ToolSpec(
                name="get_weather",
                description="Weather for a city",
                parameters={
                    "$schema": "http://json-schema.org/draft-07/schema#",
                    "type": "object",
                    "properties": {"city": {"type": "string", "format": "uri"}},
                    "required": ["city"],
                    "additionalProperties": False,
                },
            ),
            ToolSpec(name="now"),
        ],
        tool_choice=ToolChoice(mode="tool", name="get_weather"),
    )
    assert encode_request(req, "gemini-2.5-flash") == {
        "contents": [
            {
                "role": "user",
                "parts": [
                    {"text": "What is in these?"},
                    {"inlineData": {"mimeType": "image/jpeg", "data": "AAAA"}},
                    {
                        "fileData": {
                            "fileUri": "https://example.com/cat.png?size=2",
                            "mimeType": "image/png",
                        }
                    },
                    {"inlineData": {"mimeType": "image/webp", "data": "BBBB"}},
                ],
            },
            {"role": "model", "parts": [{"text": "A cat."}]},
            {"role": "user", "parts": [{"text": "And the weather?"}]},
        ],
        "systemInstruction": {"parts": [{"text": "Be brief.\n\nUse metric units."}]},
        "tools": [
            {
                "functionDeclarations": [
                    {
                        "name": "get_weather",
                        "description": "Weather for a city",
                        "parameters": {
                            "type": "object",
                            "properties": {"city": {"type": "string"}},
                            "required": ["city"],
                        },
                    },
                    {"name": "now"},
                ]
            }
        ],
        "toolConfig": {
            "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}
        },
        "generationConfig": {
            "maxOutputTokens": 256,
            "temperature": 0.2,
            "topP": 0.9,
            "stopSequences": ["END"],
        },
    }


def test_minimal_request_has_only_contents() -> None:
    req = ChatRequest(model="m", messages=[user(TextBlock(text="hi"))])
    assert encode_request(req, "gemini-2.0-flash") == {
        "contents": [{"role": "user", "parts": [{"text": "hi"}]}]
    }


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        (ToolChoice(mode="auto"), {"mode": "AUTO"}),
        (ToolChoice(mode="none"), {"mode": "NONE"}),
        (ToolChoice(mode="required"), {"mode": "ANY"}),
    ],
)
def test_tool_choice_modes(choice: ToolChoice, expected: dict[str, Any]) -> None:
    req = ChatRequest(
        model="m",
        messages=[user(TextBlock(text="hi"))],
        tools=[ToolSpec(name="f")],
        tool_choice=choice,
    )
    assert encode_request(req, "gemini-2.5-pro")["toolConfig"] == {
        "functionCallingConfig": expected
    }


def _tool_round_trip(signature: str | None) -> ChatRequest:
    call_blocks: list[Any] = []
    if signature is not None:
        call_blocks.append(ThinkingBlock(thinking="", signature=signature))
    call_blocks += [
        ToolUseBlock(id="call_a", name="get_weather", input={"city": "Paris"}),
        ToolUseBlock(id="call_b", name="get_time", input={"tz": "CET"}),
    ]
    return ChatRequest(
        model="m",
        messages=[
            user(TextBlock(text="Weather and time in Paris?")),
            assistant(*call_blocks),
            # OpenAI clients send one tool message per call: they must merge into one content.
            user(ToolResultBlock(tool_use_id="call_b", content=[TextBlock(text="12:00")])),
            user(
                ToolResultBlock(
                    tool_use_id="call_a", content=[TextBlock(text="boom")], is_error=True
                ),
                TextBlock(text="Summarise."),
            ),
        ],
    )


def test_tool_round_trip_recovers_names_and_merges_responses() -> None:
    body = encode_request(_tool_round_trip(None), "gemini-2.5-flash")
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "Weather and time in Paris?"}]},
        {
            "role": "model",
            "parts": [
                {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
                {"functionCall": {"name": "get_time", "args": {"tz": "CET"}}},
            ],
        },
        {
            "role": "user",
            "parts": [
                {"functionResponse": {"name": "get_time", "response": {"output": "12:00"}}},
                {"functionResponse": {"name": "get_weather", "response": {"error": "boom"}}},
                {"text": "Summarise."},
            ],
        },
    ]


def test_gemini_call_signature_goes_back_on_its_call() -> None:
    sig = gemini.CALL_SIGNATURE_PREFIX + "c2lnMQ=="
    body = encode_request(_tool_round_trip(sig), "gemini-3-pro-preview")
    calls = body["contents"][1]["parts"]
    assert calls[0] == {
        "functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
        "thoughtSignature": "c2lnMQ==",
    }
    assert "thoughtSignature" not in calls[1]


@pytest.mark.parametrize("signature", [None, "EqQBCkgIARAB-anthropic-signature"])
def test_unsigned_calls_get_the_sentinel_on_gemini_3_only(signature: str | None) -> None:
    body3 = encode_request(_tool_round_trip(signature), "gemini-3-flash-preview")
    parts3 = body3["contents"][1]["parts"]
    assert parts3[0]["thoughtSignature"] == gemini.SKIP_SIGNATURE
    assert "thoughtSignature" not in parts3[1]
    assert len(parts3) == 2  # the foreign thinking block itself is dropped

    body25 = encode_request(_tool_round_trip(signature), "gemini-2.5-flash")
    assert all("thoughtSignature" not in p for p in body25["contents"][1]["parts"])


def test_thinking_blocks_from_gemini_are_replayed_and_foreign_ones_dropped() -> None:
    req = ChatRequest(
        model="m",
        messages=[
            user(TextBlock(text="q")),
            assistant(
                ThinkingBlock(thinking="mine", signature=gemini.SIGNATURE_PREFIX + "U0lH"),
                ThinkingBlock(thinking="claude's", signature="ErUBCkYIBRgCIkD"),
                ThinkingBlock(thinking="unsigned summary"),
                TextBlock(text="answer"),
            ),
        ],
    )
    assert encode_request(req, "gemini-2.5-pro")["contents"][1] == {
        "role": "model",
        "parts": [
            {"text": "mine", "thought": True, "thoughtSignature": "U0lH"},
            {"text": "answer"},
        ],
    }


def test_tool_result_for_unknown_call_is_a_bad_request() -> None:
    req = ChatRequest(
        model="m",
        messages=[user(ToolResultBlock(tool_use_id="nope", content=[TextBlock(text="x")]))],
    )
    with pytest.raises(BadRequest) as exc:
        encode_request(req, "gemini-2.5-flash")
    assert exc.value.param == "messages"


def test_tool_result_images_follow_the_response() -> None:
    req = ChatRequest(
        model="m",
        messages=[
            assistant(ToolUseBlock(id="c", name="shot", input={})),
            user(
                ToolResultBlock(
                    tool_use_id="c",
                    content=[TextBlock(text="ok"), ImageBlock(media_type="image/png", data="QQ==")],
                )
            ),
        ],
    )
    parts = encode_request(req, "gemini-2.5-flash")["contents"][1]["parts"]
    assert parts == [
        {"functionResponse": {"name": "shot", "response": {"output": "ok"}}},
        {"inlineData": {"mimeType": "image/png", "data": "QQ=="}},
    ]


def test_json_schema_response_format() -> None:
    req = ChatRequest(
        model="m",
        messages=[user(TextBlock(text="hi"))],
        response_format={
            "type": "json_schema",
            "json_schema": {
                "name": "answer",
                "strict": True,
                "schema": {
                    "type": "object",
                    "properties": {"n": {"type": "integer"}},
                    "required": ["n"],
                    "additionalProperties": False,
                },
            },
        },
    )
    gen = encode_request(req, "gemini-2.5-flash")["generationConfig"]
    assert gen == {
        "responseMimeType": "application/json",
        "responseSchema": {
            "type": "object",
            "properties": {"n": {"type": "integer"}},
            "required": ["n"],
        },
    }
    req.response_format = {"type": "json_object"}
    assert encode_request(req, "g")["generationConfig"] == {"responseMimeType": "application/json"}


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        ({"thinking_budget": 2048}, {"thinkingBudget": 2048, "includeThoughts": True}),
        ({"thinking_budget": 0}, {"thinkingBudget": 0}),
        ({"reasoning_effort": "low"}, {"thinkingBudget": 1024}),
        ({"reasoning_effort": "high"}, {"thinkingBudget": 24576}),
        ({"reasoning_effort": "none"}, {"thinkingBudget": 0}),
    ],
)
def test_thinking_config(kw: dict[str, Any], expected: dict[str, Any]) -> None:
    req = ChatRequest(model="m", messages=[user(TextBlock(text="hi"))], **kw)
    assert encode_request(req, "gemini-2.5-flash")["generationConfig"]["thinkingConfig"] == expected


def test_unknown_reasoning_effort_is_a_bad_request() -> None:
    req = ChatRequest(model="m", messages=[user(TextBlock(text="hi"))], reasoning_effort="max")
    with pytest.raises(BadRequest):
        encode_request(req, "gemini-2.5-flash")


def test_clean_schema_inlines_refs_and_nullables() -> None:
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$defs": {
            "Color": {"type": "string", "enum": ["red", "green"]},
            "Node": {
                "type": "object",
                "properties": {"child": {"$ref": "#/$defs/Node"}},
            },
        },
        "type": "object",
        "properties": {
            "color": {"$ref": "#/$defs/Color", "description": "a color"},
            "note": {"type": ["string", "null"], "maxLength": 10},
            "count": {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": None},
            "kind": {"const": "fixed"},
            "level": {"type": "integer", "enum": [1, 2], "format": "int32"},
            "tree": {"$ref": "#/$defs/Node"},
            "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
        },
        "required": ["color", "ghost"],
        "additionalProperties": False,
    }
    out = clean_schema(schema)
    props = out["properties"]
    assert props["color"] == {"type": "string", "enum": ["red", "green"], "description": "a color"}
    assert props["note"] == {"type": "string", "nullable": True, "maxLength": 10}
    assert props["count"] == {"nullable": True, "type": "integer", "default": None}
    assert props["kind"] == {"enum": ["fixed"]}
    assert props["level"] == {"type": "integer", "format": "int32"}
    assert props["tags"] == {"type": "array", "items": {"type": "string"}}
    assert out["required"] == ["color"]
    assert set(out) == {"type", "properties", "required"}
    # A recursive reference stops at a bounded depth instead of recursing forever.
    depth, node = 0, props["tree"]
    while "properties" in node:
        node, depth = node["properties"]["child"], depth + 1
    assert node == {"type": "object"}
    assert 1 < depth <= 10


# ---- usage ------------------------------------------------------------------------------------


def test_parse_usage_golden() -> None:
    meta = {
        "promptTokenCount": 1200,
        "cachedContentTokenCount": 1000,
        "candidatesTokenCount": 50,
        "thoughtsTokenCount": 300,
        "toolUsePromptTokenCount": 20,
        "totalTokenCount": 1570,
    }
    assert parse_usage(meta) == Usage(
        input_tokens=1220, cache_read_tokens=1000, output_tokens=350, reasoning_tokens=300
    )
    assert parse_usage({}) == Usage()


_counts = st.one_of(
    st.none(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12),
    st.booleans(),
    st.text(max_size=5),
)


@given(
    st.fixed_dictionaries(
        {},
        optional={
            k: _counts
            for k in (
                "promptTokenCount",
                "cachedContentTokenCount",
                "candidatesTokenCount",
                "thoughtsTokenCount",
                "toolUsePromptTokenCount",
            )
        },
    )
)
def test_parse_usage_invariants(meta: dict[str, Any]) -> None:
    u = parse_usage(meta)
    for v in (u.input_tokens, u.cache_read_tokens, u.output_tokens, u.reasoning_tokens):
        assert isinstance(v, int) and v >= 0
    assert u.cache_read_tokens <= u.input_tokens
    assert u.reasoning_tokens <= u.output_tokens
    assert u.cache_write_tokens == 0


# ---- responses --------------------------------------------------------------------------------

RESPONSE = {
    "candidates": [
        {
            "content": {
                "role": "model",
                "parts": [
                    {"text": "Let me think", "thought": True},
                    {"text": " harder.", "thought": True, "thoughtSignature": "VEhPVUdIVA=="},
                    {"text": "Checking the weather. "},
                    {"text": "One moment."},
                    {
                        "functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                        "thoughtSignature": "Q0FMTA==",
                    },
                    {"functionCall": {"name": "get_time", "args": {}}},
                ],
            },
            "finishReason": "STOP",
            "index": 0,
        }
    ],
    "usageMetadata": {
        "promptTokenCount": 100,
        "candidatesTokenCount": 40,
        "thoughtsTokenCount": 60,
        "totalTokenCount": 200,
    },
    "modelVersion": "gemini-2.5-flash",
    "responseId": "resp-123",
}


def test_parse_response_golden() -> None:
    resp = parse_response(RESPONSE, "gemini-2.5-flash")
    assert resp.id == "resp-123"
    assert resp.model == "gemini-2.5-flash"
    assert resp.stop_reason == "tool_use"
    assert resp.usage == Usage(input_tokens=100, output_tokens=100, reasoning_tokens=60)
    b = resp.content
    assert b[0] == ThinkingBlock(thinking="Let me think harder.", signature="gemini:VEhPVUdIVA==")
    assert b[1] == TextBlock(text="Checking the weather. One moment.")
    assert b[2] == ThinkingBlock(thinking="", signature="gemini-call:Q0FMTA==")
    assert isinstance(b[3], ToolUseBlock) and isinstance(b[4], ToolUseBlock)
    assert (b[3].name, b[3].input, b[4].name) == ("get_weather", {"city": "Paris"}, "get_time")
    assert b[3].id.startswith("call_") and b[3].id != b[4].id
    assert len(b) == 5


def test_response_then_request_round_trips_signatures() -> None:
    resp = parse_response(RESPONSE, "gemini-3-pro-preview")
    req = ChatRequest(model="m", messages=[user(TextBlock(text="q")), assistant(*resp.content)])
    parts = encode_request(req, "gemini-3-pro-preview")["contents"][1]["parts"]
    assert parts == [
        {"text": "Let me think harder.", "thought": True, "thoughtSignature": "VEhPVUdIVA=="},
        {"text": "Checking the weather. One moment."},
        {
            "functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
            "thoughtSignature": "Q0FMTA==",
        },
        {"functionCall": {"name": "get_time", "args": {}}},
    ]


@pytest.mark.parametrize(
    ("finish", "expected"),
    [
        ("STOP", "end_turn"),
        ("MAX_TOKENS", "max_tokens"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("PROHIBITED_CONTENT", "content_filter"),
        ("BLOCKLIST", "content_filter"),
        ("MALFORMED_FUNCTION_CALL", "error"),
        ("SOMETHING_NEW", "end_turn"),
    ],
)
def test_finish_reasons(finish: str, expected: str) -> None:
    body = {"candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": finish}]}
    assert parse_response(body, "g").stop_reason == expected


def test_blocked_prompt_has_no_candidates() -> None:
    body = {
        "promptFeedback": {"blockReason": "SAFETY"},
        "usageMetadata": {"promptTokenCount": 7, "totalTokenCount": 7},
    }
    resp = parse_response(body, "g")
    assert resp.content == [] and resp.stop_reason == "content_filter"
    assert resp.usage.input_tokens == 7
    assert resp.id.startswith("gen-")


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=3),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.sampled_from(
                        ["candidates", "content", "parts", "text", "thought", "functionCall",
                         "args", "name", "finishReason", "usageMetadata", "responseId",
                         "thoughtSignature", "promptFeedback"]), c, max_size=4),
                    max_leaves=20))  # fmt: skip
def test_parse_response_never_crashes_on_odd_shapes(doc: Any) -> None:
    if isinstance(doc, dict):
        parse_response(doc, "g")
        dec = StreamDecoder("g")
        if not isinstance(doc.get("error"), dict):
            dec.feed(None, doc)
        dec.finish()


# ---- streams ----------------------------------------------------------------------------------


def _decode(frames: list[dict[str, Any]]) -> list[StreamEvent]:
    dec = StreamDecoder("gemini-2.5-flash")
    events: list[StreamEvent] = []
    for f in frames:
        events += dec.feed(None, f)
    events += dec.finish()
    assert dec.finish() == []
    return events


def _frame(parts: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
    cand: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
    if "finish" in kw:
        cand["finishReason"] = kw.pop("finish")
    return {"candidates": [cand], "responseId": "r-1", **kw}


def test_stream_text_and_usage() -> None:
    frames = [
        _frame([{"text": "Hel"}], usageMetadata={"promptTokenCount": 9, "totalTokenCount": 9}),
        _frame([{"text": "lo"}], usageMetadata={"promptTokenCount": 9, "candidatesTokenCount": 1}),
        _frame(
            [{"text": "!"}],
            finish="STOP",
            usageMetadata={"promptTokenCount": 9, "candidatesTokenCount": 3},
        ),
    ]
    events = _decode(frames)
    assert events == [
        StreamStart(id="r-1", model="gemini-2.5-flash"),
        TextDelta(index=0, text="Hel"),
        UsageUpdate(usage=Usage(input_tokens=9)),
        TextDelta(index=0, text="lo"),
        UsageUpdate(usage=Usage(input_tokens=9, output_tokens=1)),
        TextDelta(index=0, text="!"),
        UsageUpdate(usage=Usage(input_tokens=9, output_tokens=3)),
        BlockStop(index=0),
        StreamEnd(stop_reason="end_turn"),
    ]


def test_stream_thinking_then_tool_calls() -> None:
    frames = [
        _frame([{"text": "Pondering", "thought": True}]),
        _frame([{"text": " more", "thought": True, "thoughtSignature": "VA=="}]),
        _frame([{"text": "Calling."}]),
        _frame(
            [
                {"functionCall": {"name": "f", "args": {"a": 1}}, "thoughtSignature": "Qw=="},
                {"functionCall": {"name": "g", "args": {}}},
            ],
            finish="STOP",
            usageMetadata={
                "promptTokenCount": 5,
                "candidatesTokenCount": 4,
                "thoughtsTokenCount": 6,
            },
        ),
    ]
    events = _decode(frames)
    calls = [e for e in events if isinstance(e, ToolCallStart)]
    assert [c.name for c in calls] == ["f", "g"]
    assert all(c.id.startswith("call_") for c in calls)
    f_id, g_id = calls[0].id, calls[1].id
    assert events == [
        StreamStart(id="r-1", model="gemini-2.5-flash"),
        ThinkingDelta(index=0, text="Pondering"),
        ThinkingDelta(index=0, text=" more"),
        ThinkingDelta(index=0, signature="gemini:VA=="),
        BlockStop(index=0),
        TextDelta(index=1, text="Calling."),
        BlockStop(index=1),
        ThinkingDelta(index=2, signature="gemini-call:Qw=="),
        BlockStop(index=2),
        ToolCallStart(index=3, id=f_id, name="f"),
        ToolArgsDelta(index=3, partial_json='{"a": 1}'),
        BlockStop(index=3),
        ToolCallStart(index=4, id=g_id, name="g"),
        ToolArgsDelta(index=4, partial_json="{}"),
        BlockStop(index=4),
        UsageUpdate(usage=Usage(input_tokens=5, output_tokens=10, reasoning_tokens=6)),
        StreamEnd(stop_reason="tool_use"),
    ]
    args = [json.loads(e.partial_json) for e in events if isinstance(e, ToolArgsDelta)]
    assert args == [{"a": 1}, {}]


def test_stream_max_tokens_and_empty_signature_part() -> None:
    frames = [
        _frame([{"text": "cut"}]),
        _frame([{"text": "", "thoughtSignature": "dGV4dA=="}], finish="MAX_TOKENS"),
    ]
    events = _decode(frames)
    assert events[-2:] == [BlockStop(index=0), StreamEnd(stop_reason="max_tokens")]
    assert [e for e in events if isinstance(e, TextDelta)] == [TextDelta(index=0, text="cut")]


def test_empty_stream_still_starts_and_ends() -> None:
    events = _decode([])
    assert isinstance(events[0], StreamStart) and events[1:] == [StreamEnd(stop_reason="end_turn")]


def test_stream_error_frame() -> None:
    err = {"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}
    with pytest.raises(UpstreamStatus) as exc:
        StreamDecoder("g").feed(None, err)
    assert exc.value.upstream_status == 503 and exc.value.retryable
    dec = StreamDecoder("g")
    dec.feed(None, _frame([{"text": "a"}]))
    with pytest.raises(UpstreamStreamCut, match="overloaded"):
        dec.feed(None, err)


# ---- errors -----------------------------------------------------------------------------------

RATE_LIMITED = {
    "error": {
        "code": 429,
        "message": "You exceeded your current quota.",
        "status": "RESOURCE_EXHAUSTED",
        "details": [
            {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": []},
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "12s"},
        ],
    }
}


def test_error_message_and_retry_delay() -> None:
    assert error_message(RATE_LIMITED) == "You exceeded your current quota."
    assert error_message([RATE_LIMITED]) == "You exceeded your current quota."
    assert error_message({"error": {"status": "INTERNAL"}}) == "INTERNAL"
    assert error_message("nonsense") == "upstream error"
    assert retry_delay_s(RATE_LIMITED) == 12.0
    assert retry_delay_s([RATE_LIMITED]) == 12.0
    half = {"error": {"details": [{"@type": "google.rpc.RetryInfo", "retryDelay": "0.5s"}]}}
    assert retry_delay_s(half) == 0.5
    assert retry_delay_s({"error": {"code": 429}}) is None
    assert retry_delay_s(None) is None


def test_error_message_never_echoes_an_api_key() -> None:
    key = "AIzaSyA1b2C3d4E5f6G7h8I9j0KlMnOpQrStUvW"
    body = {"error": {"code": 400, "message": f"API key {key} not valid."}}
    msg = error_message(body)
    assert key not in msg and "not valid" in msg

"""The Responses translators: CreateResponse -> canonical, canonical -> Response and events."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from tokenway.domain.types import (
    BlockStop,
    ChatResponse,
    ImageBlock,
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
    ToolUseBlock,
    Usage,
    UsageUpdate,
)
from tokenway.errors import BadRequest, Unsupported
from tokenway.translate import anthropic_messages, gemini, openai_chat
from tokenway.translate import responses_request as rr
from tokenway.translate.responses_response import Shell, encode_response, encode_usage
from tokenway.translate.responses_stream import StreamEncoder
from tokenway.translate.sse import SSEParser

EVENT = TypeAdapter(ResponseStreamEvent)


def shell(**echo: Any) -> Shell:
    parsed = rr.parse_request({"model": "m", "input": "hi", **echo})
    return Shell(id="resp_1", created_at=1_800_000_000, model="m", echo=parsed.echo)


# ---- request ------------------------------------------------------------------------------


def test_every_field_maps_to_the_canonical_request() -> None:
    body = {
        "model": "m",
        "instructions": "be brief",
        "input": [
            {"role": "developer", "content": "dev note"},
            {
                "type": "message",
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "look"},
                    {"type": "input_image", "image_url": "data:image/png;base64,QUJD"},
                    {"type": "input_image", "image_url": "https://x/y.png", "detail": "low"},
                ],
            },
            {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "t"}]},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": '{"a": 1}'},
            {"type": "function_call_output", "call_id": "c1", "output": "done"},
            {"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}]},
        ],
        "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}],
        "tool_choice": {"type": "function", "name": "f"},
        "parallel_tool_calls": False,
        "text": {
            "format": {"type": "json_schema", "name": "out", "schema": {"type": "object"}},
            "verbosity": "low",
        },
        "reasoning": {"effort": "high", "summary": "auto"},
        "max_output_tokens": 500,
        "temperature": 0.2,
        "top_p": 0.9,
        "metadata": {"team": "search"},
        "user": "u1",
        "prompt_cache_key": "pk",
        "store": False,
        "stream": True,
    }
    parsed = rr.parse_request(body)
    req = parsed.chat
    assert [b.text for b in req.system] == ["be brief", "dev note"]
    assert [m.role for m in req.messages] == ["user", "assistant", "user", "assistant"]
    user = req.messages[0].content
    assert user[0] == TextBlock(text="look")
    assert user[1] == ImageBlock(media_type="image/png", data="QUJD")
    assert user[2] == ImageBlock(url="https://x/y.png", detail="low")
    assert req.messages[1].content == [
        ThinkingBlock(thinking="t"),
        ToolUseBlock(id="c1", name="f", input={"a": 1}),
    ]
    assert req.messages[2].content == [
        ToolResultBlock(tool_use_id="c1", content=[TextBlock(text="done")])
    ]
    assert req.messages[3].content == [TextBlock(text="no")]
    assert [t.name for t in req.tools] == ["f"]
    assert req.tool_choice == ToolChoice(mode="tool", name="f", disable_parallel=True)
    assert req.response_format == {
        "type": "json_schema",
        "json_schema": {"name": "out", "schema": {"type": "object"}},
    }
    assert req.reasoning_effort == "high" and req.max_tokens == 500
    assert req.temperature == 0.2 and req.top_p == 0.9 and req.user == "u1" and req.stream
    assert req.extras == {"prompt_cache_key": "pk", "verbosity": "low"}  # never `store`
    assert parsed.store is False
    echo = parsed.echo
    assert echo["text"] == {
        "format": {"type": "json_schema", "name": "out", "schema": {"type": "object"}},
        "verbosity": "low",
    }
    assert echo["reasoning"] == {"effort": "high", "summary": "auto"}
    assert echo["parallel_tool_calls"] is False and echo["store"] is False
    assert [i["id"] for i in parsed.items][4] != "" and parsed.items[2]["id"] == "rs_1"
    # the chat upstream gets every field that has a chat meaning
    chat = openai_chat.encode_request(req, "gpt")
    assert chat["reasoning_effort"] == "high" and chat["max_completion_tokens"] == 500
    assert chat["verbosity"] == "low" and "store" not in chat
    assert chat["parallel_tool_calls"] is False


def test_history_comes_before_the_input_and_instructions_stay() -> None:
    parsed = rr.parse_request({"model": "m", "input": "second", "instructions": "sys"})
    history = [
        rr.normalise_item({"role": "user", "content": "first"}, "h"),
        {
            "id": "msg_a",
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": "answer", "annotations": []}],
        },
    ]
    req = rr.to_chat(parsed, history)
    assert [b.text for b in req.system] == ["sys"]
    texts = [b.text for m in req.messages for b in m.content if isinstance(b, TextBlock)]
    assert texts == ["first", "answer", "second"]
    assert rr.to_chat(parsed, []) is parsed.chat


def test_reasoning_signatures_only_when_marked() -> None:
    mine = {
        "type": "reasoning",
        "summary": [],
        "content": [{"type": "reasoning_text", "text": "hmm"}],
        "encrypted_content": rr.SIGNATURE_MARK + "sig",
    }
    theirs = {**mine, "encrypted_content": "gAAAA-openai-blob"}
    redacted = {"type": "reasoning", "summary": [], "encrypted_content": rr.REDACTED_MARK + "x"}
    req = rr.parse_request({"model": "m", "input": [mine, theirs, redacted]}).chat
    blocks = req.messages[0].content
    assert blocks[0] == ThinkingBlock(thinking="hmm", signature="sig")
    assert blocks[1] == ThinkingBlock(thinking="hmm", signature=None)
    assert type(blocks[2]).__name__ == "RedactedThinkingBlock"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "x"}, "model"),
        ({"model": "m"}, "input"),
        ({"model": "m", "input": [{"type": "computer_call"}]}, "input[0]"),
        ({"model": "m", "input": "x", "tools": [{"type": "code_interpreter"}]}, "tools[0].type"),
        ({"model": "m", "input": "x", "prompt": {"id": "p"}}, "prompt"),
        ({"model": "m", "input": "x", "truncation": "sometimes"}, "truncation"),
        ({"model": "m", "input": "x", "include": [1]}, "include"),
        ({"model": "m", "input": [{"role": "system", "content": [{"type": "input_image"}]}]}, None),
    ],
)
def test_bad_requests_name_their_field(body: dict[str, Any], param: str | None) -> None:
    with pytest.raises(BadRequest) as e:
        rr.parse_request(body)
    if param is not None:
        assert e.value.param == param


def test_hosted_tools_are_unsupported_not_malformed() -> None:
    with pytest.raises(Unsupported) as e:
        rr.parse_request({"model": "m", "input": "x", "tools": [{"type": "web_search_preview"}]})
    assert "function tools only" in e.value.message


# ---- hypothesis: any valid CreateResponse translates, and its text survives ------------------

text = st.text(max_size=12)
no_nul = text.filter(lambda v: "\x00" not in v)
ident = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)
args = st.dictionaries(ident, st.integers() | text, max_size=3)


@st.composite
def segment(draw: st.DrawFn) -> list[dict[str, Any]]:
    """A few input items that belong together (a call and its output share a call_id)."""
    kind = draw(st.sampled_from(["user", "system", "assistant", "call", "reasoning"]))
    if kind == "call":
        call_id = "call_" + draw(ident)
        call = {
            "type": "function_call",
            "call_id": call_id,
            "name": draw(ident),
            "arguments": json.dumps(draw(args)),
        }
        return [call, {"type": "function_call_output", "call_id": call_id, "output": draw(text)}]
    if kind == "reasoning":
        return [{"type": "reasoning", "summary": [{"type": "summary_text", "text": draw(text)}]}]
    role = kind if kind != "system" else draw(st.sampled_from(["system", "developer"]))
    part = "output_text" if role == "assistant" else "input_text"
    if draw(st.booleans()):
        content: Any = draw(text)
    else:
        content = [{"type": part, "text": t} for t in draw(st.lists(text, min_size=1, max_size=3))]
    item: dict[str, Any] = {"role": role, "content": content}
    if draw(st.booleans()):
        item["type"] = "message"
    return [item]


@st.composite
def create_body(draw: st.DrawFn) -> dict[str, Any]:
    if draw(st.booleans()):
        items: Any = draw(text)
    else:
        items = [i for seg in draw(st.lists(segment(), min_size=1, max_size=6)) for i in seg]
    body: dict[str, Any] = {"model": draw(ident), "input": items}
    optional = {
        "instructions": text,
        "max_output_tokens": st.integers(16, 100_000),
        "temperature": st.floats(0, 2),
        "top_p": st.floats(0, 1),
        "reasoning": st.fixed_dictionaries({"effort": st.sampled_from(sorted(rr.EFFORTS))}),
        "text": st.sampled_from(
            [
                {"format": {"type": "text"}},
                {"format": {"type": "json_object"}},
                {"format": {"type": "json_schema", "name": "x", "schema": {"type": "object"}}},
            ]
        ),
        "tools": st.lists(st.builds(lambda n: {"type": "function", "name": n}, ident), max_size=2),
        "tool_choice": st.sampled_from(["auto", "none", "required"]),
        "store": st.booleans(),
        "stream": st.booleans(),
        # NUL is refused in metadata and user (a PostgreSQL store cannot hold it)
        "metadata": st.dictionaries(ident, no_nul, max_size=3),
        "user": no_nul,
    }
    for key, strategy in optional.items():
        if draw(st.booleans()):
            body[key] = draw(strategy)
    return body


def _expected_texts(items: Any) -> tuple[list[str], list[str]]:
    """(system texts, conversation texts) of raw input items, in order."""
    if isinstance(items, str):
        return [], [items]
    system: list[str] = []
    convo: list[str] = []
    for item in items:
        kind = item.get("type", "message")
        if kind == "message":
            content = item["content"]
            texts = [content] if isinstance(content, str) else [p["text"] for p in content]
            (system if item["role"] in ("system", "developer") else convo).extend(texts)
        elif kind == "function_call_output":
            convo.append(item["output"])
        elif kind == "reasoning" and item["summary"][0]["text"]:
            convo.append(item["summary"][0]["text"])
    return system, convo


def _canonical_texts(req: Any) -> list[str]:
    out: list[str] = []
    for m in req.messages:
        for b in m.content:
            if isinstance(b, TextBlock):
                out.append(b.text)
            elif isinstance(b, ThinkingBlock):
                out.append(b.thinking)
            elif isinstance(b, ToolResultBlock):
                out.extend(c.text for c in b.content if isinstance(c, TextBlock))
    return out


@settings(max_examples=300, deadline=None)
@given(create_body())
def test_any_valid_request_translates_and_keeps_its_text(body: dict[str, Any]) -> None:
    parsed = rr.parse_request(body)
    req = parsed.chat
    system, convo = _expected_texts(body["input"])
    instructions = [body["instructions"]] if body.get("instructions") else []
    assert [b.text for b in req.system] == instructions + system
    assert _canonical_texts(req) == convo
    # the normalised items (what input_items lists and storage replays) say the same thing
    again = rr.parse_request({**body, "input": parsed.items})
    assert again.chat == req
    assert [i["id"] for i in again.items] == [i["id"] for i in parsed.items]
    # function call arguments survive as objects
    calls = [b for m in req.messages for b in m.content if isinstance(b, ToolUseBlock)]
    raw_calls = [i for i in body["input"] if isinstance(i, dict) and "arguments" in i]
    assert [c.input for c in calls] == [json.loads(i["arguments"]) for i in raw_calls]
    # and every upstream protocol can take the result
    openai_chat.encode_request(req, "gpt")
    anthropic_messages.encode_request(req, "claude")
    try:
        gemini.encode_request(req, "gemini-2.5-flash")
    except BadRequest as exc:  # Gemini has no `xhigh` effort
        assert req.reasoning_effort == "xhigh", exc.message


# ---- response -------------------------------------------------------------------------------


def test_whole_response_validates_against_the_sdk_model() -> None:
    resp = ChatResponse(
        id="x",
        model="up",
        content=[
            ThinkingBlock(thinking="hmm", signature="s"),
            TextBlock(text="hello"),
            ToolUseBlock(id="call_1", name="f", input={"a": 1}),
        ],
        stop_reason="tool_use",
        usage=Usage(
            input_tokens=100,
            cache_read_tokens=40,
            cache_write_tokens=10,
            output_tokens=30,
            reasoning_tokens=20,
        ),
    )
    tools = [{"type": "function", "name": "f"}]
    doc = encode_response(shell(instructions="sys", tools=tools), resp)
    r = Response.model_validate(doc)
    assert r.id == "resp_1" and r.status == "completed" and r.instructions == "sys"
    assert [o.type for o in r.output] == ["reasoning", "message", "function_call"]
    assert r.output_text == "hello"
    assert r.output[0].encrypted_content == rr.SIGNATURE_MARK + "s"
    assert r.output[2].call_id == "call_1" and json.loads(r.output[2].arguments) == {"a": 1}
    assert r.usage is not None
    assert r.usage.model_dump() == {
        "input_tokens": 100,
        "input_tokens_details": {
            "cached_tokens": 40,
            "cache_write_tokens": 10,
            "cache_write_tokens_details": None,
        },
        "output_tokens": 30,
        "output_tokens_details": {"reasoning_tokens": 20},
        "total_tokens": 130,
    }


def test_output_limit_and_content_filter_are_incomplete() -> None:
    for stop, reason in (("max_tokens", "max_output_tokens"), ("content_filter", "content_filter")):
        resp = ChatResponse(id="x", model="m", content=[TextBlock(text="cut")], stop_reason=stop)
        r = Response.model_validate(encode_response(shell(), resp))
        assert r.status == "incomplete" and r.incomplete_details is not None
        assert r.incomplete_details.reason == reason
        assert r.output[0].status == "incomplete"


def test_usage_shape() -> None:
    u = encode_usage(Usage(input_tokens=5, output_tokens=7, reasoning_tokens=2))
    assert u["total_tokens"] == 12 and u["output_tokens_details"] == {"reasoning_tokens": 2}


# ---- stream ---------------------------------------------------------------------------------


def _events(raw: bytes) -> list[dict[str, Any]]:
    parser = SSEParser()
    frames = parser.feed(raw) + parser.close()
    out = []
    for name, data in frames:
        doc = msgspec.json.decode(data)
        assert name == doc["type"]
        EVENT.validate_python(doc)  # every event is one the SDK knows, with every field
        out.append(doc)
    return out


def run(evs: list[StreamEvent], *, fail: str | None = None) -> tuple[StreamEncoder, list[Any]]:
    enc = StreamEncoder(shell())
    raw = b"".join(enc.encode(ev) for ev in evs)
    raw += enc.error(fail) if fail is not None else enc.finish()
    return enc, _events(raw)


def test_stream_sequence_for_thinking_text_and_a_tool_call() -> None:
    enc, events = run(
        [
            StreamStart(id="u", model="m"),
            ThinkingDelta(index=0, text="hm"),
            ThinkingDelta(index=0, signature="sig"),
            BlockStop(index=0),
            TextDelta(index=1, text="Hel"),
            TextDelta(index=1, text="lo"),
            BlockStop(index=1),
            ToolCallStart(index=2, id="call_9", name="f"),
            ToolArgsDelta(index=2, partial_json='{"a"'),
            ToolArgsDelta(index=2, partial_json=":1}"),
            UsageUpdate(usage=Usage(input_tokens=3, output_tokens=9, reasoning_tokens=2)),
            StreamEnd(stop_reason="tool_use"),
        ]
    )
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.reasoning_text.delta",
        "response.reasoning_text.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    final = Response.model_validate(events[-1]["response"])
    assert final.usage is not None and final.usage.output_tokens == 9
    assert final.usage.input_tokens == 3
    assert final.output[0].encrypted_content == rr.SIGNATURE_MARK + "sig"
    assert final.output_text == "Hello"
    assert final.output[2].arguments == '{"a":1}' and final.output[2].call_id == "call_9"
    assert enc.final == events[-1]["response"]


def test_stream_failure_sends_error_then_failed() -> None:
    enc, events = run([TextDelta(index=0, text="par")], fail="upstream stream broke")
    assert [e["type"] for e in events][-2:] == ["error", "response.failed"]
    assert events[-2]["message"] == "upstream stream broke"
    failed = Response.model_validate(events[-1]["response"])
    assert failed.status == "failed" and failed.error is not None
    assert failed.output[0].status == "incomplete"
    assert enc.final is not None and enc.final["status"] == "failed"


events_strategy = st.lists(
    st.one_of(
        st.builds(TextDelta, index=st.integers(0, 3), text=text),
        st.builds(ThinkingDelta, index=st.integers(0, 3), text=text),
        st.builds(ToolCallStart, index=st.integers(0, 3), id=ident, name=ident),
        st.builds(ToolArgsDelta, index=st.integers(0, 3), partial_json=text),
        st.builds(BlockStop, index=st.integers(0, 3)),
        st.builds(
            UsageUpdate,
            usage=st.builds(Usage, input_tokens=st.integers(0, 9), output_tokens=st.integers(0, 9)),
        ),
        st.builds(StreamEnd, stop_reason=st.sampled_from(["end_turn", "max_tokens", "tool_use"])),
    ),
    max_size=25,
)


@settings(max_examples=300, deadline=None)
@given(events_strategy, st.booleans())
def test_any_canonical_stream_encodes_to_a_valid_event_sequence(
    evs: list[StreamEvent], failed: bool
) -> None:
    enc, events = run(evs, fail="boom" if failed else None)
    types = [e["type"] for e in events]
    assert types[:2] == ["response.created", "response.in_progress"]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert types[-1] in ("response.failed", "response.completed", "response.incomplete")
    added = [e["output_index"] for e in events if e["type"] == "response.output_item.added"]
    done = [e["output_index"] for e in events if e["type"] == "response.output_item.done"]
    assert added == list(range(len(added)))
    if not failed:
        assert done == added  # every item finished, in order, before the end
    final = events[-1]["response"]
    assert len(final["output"]) == len(added)
    for item in final["output"]:
        deltas = [
            e["delta"]
            for e in events
            if e.get("item_id") == item["id"] and e["type"].endswith(".delta")
        ]
        if item["type"] == "message":
            assert item["content"][0]["text"] == "".join(deltas)
        elif item["type"] == "function_call":
            assert item["arguments"] == "".join(deltas)
    assert enc.final == final

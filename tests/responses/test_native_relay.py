"""The pieces of the native Responses relay, one by one: usage, the stream decoder, the relay
that makes an upstream's Response objects tokenway's, the replayed conversation, the adapter."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokenway.config.schema import ProviderConfig
from tokenway.domain.types import (
    ChatRequest,
    StreamEnd,
    TextDelta,
    ToolArgsDelta,
    ToolCallStart,
    Usage,
    UsageUpdate,
)
from tokenway.errors import BadRequest, UpstreamStreamCut
from tokenway.gateway.responses import _native_body
from tokenway.providers.adapters import OpenAIAdapter, ResponsesAdapter, native_adapters
from tokenway.translate.responses_items import SIGNATURE_MARK
from tokenway.translate.responses_response import Shell
from tokenway.translate.responses_upstream import Relay, StreamDecoder, parse_usage, replay

SHELL = Shell(
    id="resp_" + "a" * 48,
    created_at=1,
    model="m-native",
    echo={"store": True, "previous_response_id": "resp_" + "b" * 48},
)


def usage_doc(**u: Any) -> dict[str, Any]:
    return {"usage": u, "service_tier": "flex"}


def test_usage_reads_cached_and_reasoning_subsets() -> None:
    u = parse_usage(
        usage_doc(
            input_tokens=1200,
            input_tokens_details={"cached_tokens": 1024},
            output_tokens=300,
            output_tokens_details={"reasoning_tokens": 256},
            total_tokens=1500,
        )
    )
    assert u == Usage(
        input_tokens=1200,
        cache_read_tokens=1024,
        output_tokens=300,
        reasoning_tokens=256,
        service_tier="flex",
    )
    assert parse_usage({}) == Usage()
    assert parse_usage({"usage": None, "service_tier": "default"}).service_tier == "default"


@given(
    st.integers(-5, 10_000),
    st.integers(-5, 20_000),
    st.integers(-5, 10_000),
    st.integers(-5, 20_000),
)
def test_usage_subsets_never_exceed_their_totals(
    prompt: int, cached: int, output: int, reasoning: int
) -> None:
    u = parse_usage(
        usage_doc(
            input_tokens=prompt,
            input_tokens_details={"cached_tokens": cached},
            output_tokens=output,
            output_tokens_details={"reasoning_tokens": reasoning},
        )
    )
    assert 0 <= u.cache_read_tokens + u.cache_write_tokens <= u.input_tokens
    assert 0 <= u.reasoning_tokens <= u.output_tokens


def test_decoder_yields_canonical_events() -> None:
    d = StreamDecoder()
    assert d.feed("response.created", {"type": "response.created", "response": {}}) == []
    assert d.feed(
        None, {"type": "response.output_text.delta", "output_index": 1, "delta": "hi"}
    ) == [TextDelta(index=1, text="hi")]
    item = {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": ""}
    added = {"type": "response.output_item.added", "output_index": 2, "item": item}
    assert d.feed(None, added) == [ToolCallStart(index=2, id="call_1", name="f")]
    delta = {"type": "response.function_call_arguments.delta", "output_index": 2, "delta": "{"}
    assert d.feed(None, delta) == [ToolArgsDelta(index=2, partial_json="{")]
    with pytest.raises(UpstreamStreamCut):
        d.finish()
    resp = {"output": [item], "usage": {"input_tokens": 3, "output_tokens": 4}}
    done = d.feed(None, {"type": "response.completed", "response": resp})
    assert done == [
        UsageUpdate(usage=Usage(input_tokens=3, output_tokens=4)),
        StreamEnd(stop_reason="tool_use"),
    ]
    assert d.finish() == []
    capped = {"incomplete_details": {"reason": "max_output_tokens"}, "output": []}
    (_, end) = StreamDecoder().feed(None, {"type": "response.incomplete", "response": capped})
    assert end == StreamEnd(stop_reason="max_tokens")


def test_relay_restamps_whole_responses() -> None:
    relay = Relay(SHELL)
    upstream = {"id": "resp_up", "store": False, "previous_response_id": None, "output": []}
    body = relay.whole(msgspec.json.encode(upstream))
    doc = msgspec.json.decode(body)
    assert doc["id"] == SHELL.id and doc["store"] is True
    assert doc["previous_response_id"] == SHELL.echo["previous_response_id"]
    assert relay.final_of(body) == doc
    assert relay.final_of(bytes(bytearray(body))) is None  # only the very bytes it made
    with pytest.raises(ValueError):
        relay.whole(b"[]")


def test_relay_restamps_state_events_and_passes_the_rest_untouched() -> None:
    relay = Relay(SHELL)
    created = {"type": "response.created", "response": {"id": "resp_up"}, "sequence_number": 0}
    out = relay.frame(b"raw", created)
    assert out.startswith(b"event: response.created\ndata: ")
    assert msgspec.json.decode(out.split(b"data: ", 1)[1])["response"]["id"] == SHELL.id
    raw = b'data: {"type":"response.output_text.delta"}\n\n'
    delta = {"type": "response.output_text.delta", "delta": "x", "sequence_number": 1}
    assert relay.frame(raw, delta) is raw
    item = {"id": "msg_1", "type": "message"}
    done = {"type": "response.output_item.done", "output_index": 0, "item": item}
    assert relay.frame(raw, {**done, "sequence_number": 2}) is raw
    assert relay.final is None
    tail = relay.error("boom")
    frames = [msgspec.json.decode(f.split(b"data: ", 1)[1]) for f in tail.split(b"\n\n") if f]
    assert [(f["type"], f["sequence_number"]) for f in frames] == [
        ("error", 3),
        ("response.failed", 4),
    ]
    failed = frames[1]["response"]
    assert failed["id"] == SHELL.id and failed["status"] == "failed"
    assert failed["output"] == [item] and failed["error"]["message"] == "boom"
    assert relay.final == failed


def test_replay_gives_an_upstream_only_what_it_can_take() -> None:
    items: list[dict[str, Any]] = [
        {"id": "msg_u", "type": "message", "role": "user", "status": "completed", "content": []},
        {"id": "msg_a", "type": "message", "role": "assistant", "status": "completed"},
        {"id": "rs_1", "type": "reasoning", "summary": []},
        {"id": "rs_2", "type": "reasoning", "summary": [], "encrypted_content": None},
        {"id": "rs_3", "type": "reasoning", "summary": [], "encrypted_content": SIGNATURE_MARK},
        {"id": "rs_4", "type": "reasoning", "summary": [], "encrypted_content": "gAAA"},
        {"id": "fc_1", "type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
    ]
    out = replay(items)
    assert out[0] == {"type": "message", "role": "user", "status": "completed", "content": []}
    assert [i["id"] for i in out[1:]] == ["msg_a", "rs_4", "fc_1"]


def test_native_body_expands_previous_response_id() -> None:
    raw: dict[str, Any] = {"model": "m", "input": "next", "previous_response_id": "resp_x"}
    assert _native_body(raw, []) is raw
    history = [{"id": "msg_u", "type": "message", "role": "user", "content": []}]
    body = _native_body(raw, history)
    assert "previous_response_id" not in body and body["model"] == "m"
    assert body["input"] == [
        {"type": "message", "role": "user", "content": []},
        {"role": "user", "content": "next"},
    ]
    listed = {**raw, "input": [{"type": "function_call_output", "call_id": "c", "output": "1"}]}
    assert _native_body(listed, history)["input"][1:] == listed["input"]


def test_responses_adapter_relays_to_the_responses_endpoint() -> None:
    cfg = ProviderConfig(
        name="o", kind="openai", base_url="https://api.example/v1/", responses=True
    )
    native = native_adapters(cfg, OpenAIAdapter(cfg))
    assert set(native) == {"openai", "responses"}
    adapter = native["responses"]
    assert isinstance(adapter, ResponsesAdapter)
    req = ChatRequest(model="m-native", messages=[])
    raw = {"model": "m-native", "input": "hi", "store": True, "stream": True}
    prep = adapter.chat(req, raw, "gpt-4o-mini", {})
    assert prep.url == "https://api.example/v1/responses"
    assert msgspec.json.decode(prep.body) == {**raw, "model": "gpt-4o-mini", "store": False}
    assert raw["model"] == "m-native"  # the client's body itself is left alone
    with pytest.raises(BadRequest):
        adapter.chat(req, None, "gpt-4o-mini", {})
    plain = ProviderConfig(name="o", kind="openai", base_url="https://api.example/v1")
    assert set(native_adapters(plain, OpenAIAdapter(plain))) == {"openai"}

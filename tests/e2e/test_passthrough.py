"""Same protocol on both sides: the client's body and headers reach the upstream untouched but
for the model name; different protocols: translated."""

from __future__ import annotations

import anthropic
import pytest

from .conftest import clients_for
from .stack import Stack


def last(stack: Stack, sim: str) -> object:
    return stack.sims[sim].received[-1]


def test_openai_unknown_fields_pass_through(stack: Stack) -> None:
    client = clients_for(stack).openai()
    client.chat.completions.create(
        model="m-openai",
        messages=[{"role": "user", "content": "hi"}],
        extra_body={"vendor_knob": {"depth": 3}, "seed": 7},
        extra_headers={"openai-beta": "assistants=v2"},
    )
    got = last(stack, "s-openai")
    assert got.body["model"] == "gpt-4o-mini"  # type: ignore[attr-defined]
    assert got.body["vendor_knob"] == {"depth": 3}  # type: ignore[attr-defined]
    assert got.body["seed"] == 7  # type: ignore[attr-defined]
    assert got.headers["openai-beta"] == "assistants=v2"  # type: ignore[attr-defined]


def test_openai_stream_asks_upstream_for_usage(stack: Stack) -> None:
    client = clients_for(stack).openai()
    list(
        client.chat.completions.create(
            model="m-openai", messages=[{"role": "user", "content": "x"}], stream=True
        )
    )
    got = last(stack, "s-openai")
    assert got.body["stream_options"] == {"include_usage": True}  # type: ignore[attr-defined]


def test_anthropic_passthrough_keeps_cache_control_thinking_and_beta(stack: Stack) -> None:
    client = clients_for(stack).anthropic()
    system = [
        {
            "type": "text",
            "text": "You are terse.",
            "cache_control": {"type": "ephemeral", "ttl": "1h"},
        }
    ]
    messages = [
        {"role": "user", "content": "think first"},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "sig-abc"},
                {"type": "text", "text": "ok"},
            ],
        },
        {
            "role": "user",
            "content": [{"type": "text", "text": "again", "cache_control": {"type": "ephemeral"}}],
        },
    ]
    m = client.messages.create(
        model="m-anthropic",
        max_tokens=2000,
        system=system,
        messages=messages,
        thinking={"type": "enabled", "budget_tokens": 1024},
        extra_headers={"anthropic-beta": "interleaved-thinking-2025-05-14"},
        extra_body={"future_field": True},
    )
    got = last(stack, "s-anthropic")
    body = got.body  # type: ignore[attr-defined]
    assert body["model"] == "claude-sonnet-4-5"
    assert body["system"] == system
    assert body["messages"] == messages
    assert body["future_field"] is True
    assert got.headers["anthropic-beta"] == "interleaved-thinking-2025-05-14"  # type: ignore[attr-defined]
    assert m.content[0].type == "thinking" and m.content[0].signature


def test_cross_protocol_request_is_translated(stack: Stack) -> None:
    client = clients_for(stack).anthropic()
    client.messages.create(
        model="m-openai",
        max_tokens=77,
        system="Be brief.",
        messages=[{"role": "user", "content": "hi"}],
    )
    body = last(stack, "s-openai").body  # type: ignore[attr-defined]
    assert body["model"] == "gpt-4o-mini"
    assert (
        body["messages"][0] == {"role": "system", "content": "Be brief."}
        or body["messages"][0]["role"] == "system"
    )
    assert body.get("max_tokens") == 77 or body.get("max_completion_tokens") == 77


def test_gemini_gets_native_request(stack: Stack) -> None:
    client = clients_for(stack).openai()
    client.chat.completions.create(
        model="m-gemini",
        messages=[{"role": "system", "content": "sys"}, {"role": "user", "content": "hi"}],
        max_tokens=33,
    )
    got = last(stack, "s-gemini")
    assert got.path.endswith("gemini-2.5-flash:generateContent")  # type: ignore[attr-defined]
    body = got.body  # type: ignore[attr-defined]
    assert body["generationConfig"]["maxOutputTokens"] == 33
    assert body["systemInstruction"]["parts"][0]["text"] == "sys"


DOC = {
    "type": "document",
    "source": {"type": "text", "media_type": "text/plain", "data": "The sky is blue."},
}


def test_unsupported_block_passes_through_to_same_protocol(stack: Stack) -> None:
    client = clients_for(stack).anthropic()
    messages = [{"role": "user", "content": [DOC, {"type": "text", "text": "colour?"}]}]
    m = client.messages.create(model="m-anthropic", max_tokens=50, messages=messages)
    assert m.content
    assert last(stack, "s-anthropic").body["messages"] == messages  # type: ignore[attr-defined]


def test_unsupported_block_to_other_protocol_is_a_clear_400(stack: Stack) -> None:
    client = clients_for(stack).anthropic()
    with pytest.raises(anthropic.BadRequestError) as e:
        client.messages.create(
            model="m-openai",
            max_tokens=50,
            messages=[{"role": "user", "content": [DOC]}],
        )
    assert "document" in str(e.value)

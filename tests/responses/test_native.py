"""Responses requests relayed natively to OpenAI-kind upstreams with `responses: true`, driven
by the official SDK: the upstream gets a Responses body (not chat completions), the client gets
the upstream's Response under tokenway's id, the conversation stays in tokenway's store, and
the ledger costs the upstream's usage exactly."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import openai
import pytest

from tests.e2e.stack import Stack

from .conftest import PRICE, UPSTREAM_KEY, WEATHER, ledger_rows

LONG = " ".join(f"fact{i} is true." for i in range(700))
MILLION = Decimal(1_000_000)
# tokenway's response ids: 48 hex digits (the simulated upstream's have 24)
OWN_ID_LEN = len("resp_") + 48


def sent(stack: Stack, sim: str = "s-native") -> Any:
    """The last request the simulated provider `sim` received."""
    return stack.sims[sim].received[-1]


def exact_cost(row: dict[str, Any]) -> Decimal:
    fresh = int(row["input_tokens"]) - int(row["cache_read_tokens"])
    return (
        fresh * Decimal(str(PRICE["input"]))
        + int(row["cache_read_tokens"]) * Decimal(str(PRICE["cache_read"]))
        + int(row["output_tokens"]) * Decimal(str(PRICE["output"]))
    ) / MILLION


def test_whole_response_is_relayed_under_tokenways_id(stack: Stack, client: openai.OpenAI) -> None:
    raw = client.responses.with_raw_response.create(
        model="m-native",
        input="Say hello",
        instructions="Answer briefly.",
        max_output_tokens=200,
        metadata={"feature": "greeting"},
        extra_body={"vendor_hint": "fast"},
    )
    r = raw.parse()
    up = sent(stack)
    assert up.path == "/v1/responses"
    assert up.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    body = up.body
    assert "messages" not in body and body["input"] == "Say hello"
    assert body["model"] == "gpt-4o-mini" and body["store"] is False
    assert body["instructions"] == "Answer briefly." and body["max_output_tokens"] == 200
    assert body["metadata"] == {"feature": "greeting"}
    assert body["vendor_hint"] == "fast"  # fields tokenway does not model still reach it

    assert r.status == "completed" and r.output_text
    assert r.id.startswith("resp_") and len(r.id) == OWN_ID_LEN
    assert r.store is True and r.previous_response_id is None
    assert r.model == "gpt-4o-mini"  # the upstream's, as in the chat passthrough
    assert raw.headers["x-tokenway-provider"] == "native"
    assert client.responses.retrieve(r.id).output_text == r.output_text

    u = r.usage
    assert u is not None
    row = ledger_rows(stack)[raw.headers["x-tokenway-request-id"]]
    assert row["api"] == "openai.responses" and row["provider"] == "native"
    assert row["provider_model"] == "gpt-4o-mini" and row["stream"] is False
    assert (row["input_tokens"], row["output_tokens"]) == (u.input_tokens, u.output_tokens)
    assert Decimal(row["cost_usd"]) == exact_cost(row) > 0
    header = raw.headers["x-tokenway-cost-usd"]
    assert header == row["cost_usd"][: len(header)]


def test_stream_events_are_relayed_in_order(stack: Stack, client: openai.OpenAI) -> None:
    with client.responses.stream(model="m-native", input="Say hello") as stream:
        events = list(stream)
        final = stream.get_final_response()
    assert sent(stack).body["stream"] is True and sent(stack).path == "/v1/responses"
    tail = [e.type for e in events if e.type != "response.output_text.delta"]
    assert tail == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[0].response.id == final.id and len(final.id) == OWN_ID_LEN
    assert final.store is True
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas and deltas == final.output_text
    assert client.responses.retrieve(final.id).output_text == final.output_text


@pytest.mark.parametrize("streamed", [False, True])
def test_cached_and_reasoning_tokens_are_costed_exactly(
    stack: Stack, client: openai.OpenAI, streamed: bool
) -> None:
    prompt = f"{LONG} ({'streamed' if streamed else 'whole'})"
    client.responses.create(model="m-native-reason", input=prompt)  # warms the prefix cache
    if streamed:
        with client.responses.with_streaming_response.create(
            model="m-native-reason", input=prompt, stream=True
        ) as resp:
            rid = resp.headers["x-tokenway-request-id"]
            events = list(resp.parse())
        assert events[-1].type == "response.completed"
        u = events[-1].response.usage
    else:
        raw = client.responses.with_raw_response.create(model="m-native-reason", input=prompt)
        rid = raw.headers["x-tokenway-request-id"]
        u = raw.parse().usage
    assert u is not None
    assert u.input_tokens_details.cached_tokens > 0
    assert u.output_tokens_details.reasoning_tokens > 0
    row = ledger_rows(stack)[rid]
    assert row["provider"] == "native" and row["provider_model"] == "o4-mini"
    assert row["stream"] is streamed and row["flag"] == "OK"
    assert row["input_tokens"] == u.input_tokens
    assert row["cache_read_tokens"] == u.input_tokens_details.cached_tokens
    assert row["output_tokens"] == u.output_tokens
    assert row["reasoning_tokens"] == u.output_tokens_details.reasoning_tokens
    assert Decimal(row["cost_usd"]) == exact_cost(row) > 0


@pytest.mark.parametrize("streamed", [False, True])
def test_function_tool_round_trip(stack: Stack, client: openai.OpenAI, streamed: bool) -> None:
    def ask(**kw: Any) -> Any:
        if not streamed:
            return client.responses.create(model="m-native", tools=[WEATHER], **kw)
        with client.responses.stream(model="m-native", tools=[WEATHER], **kw) as stream:
            for _ in stream:
                pass
            return stream.get_final_response()

    first = ask(input="Weather in Paris?")
    (call,) = [item for item in first.output if item.type == "function_call"]
    assert call.name == "get_weather" and json.loads(call.arguments)["city"]
    second = ask(
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "21C"}],
    )
    assert second.status == "completed" and second.output_text
    assert second.previous_response_id == first.id

    # the upstream never saw tokenway's ids: it got the whole conversation as input
    body = sent(stack).body
    assert "previous_response_id" not in body and "messages" not in body
    assert body["store"] is False
    user, fc, out = body["input"]
    assert user == {
        "type": "message",
        "role": "user",
        "status": "completed",
        "content": [{"type": "input_text", "text": "Weather in Paris?"}],
    }
    assert fc["type"] == "function_call" and fc["call_id"] == call.call_id
    assert fc["arguments"] == call.arguments
    assert out == {"type": "function_call_output", "call_id": call.call_id, "output": "21C"}


def test_follow_up_expands_the_stored_conversation(stack: Stack, client: openai.OpenAI) -> None:
    first = client.responses.create(
        model="m-native", input="Remember the word heron.", instructions="Be brief."
    )
    raw = client.responses.with_raw_response.create(
        model="m-native", input="Which word?", previous_response_id=first.id
    )
    second = raw.parse()
    body = sent(stack).body
    # instructions are not carried over by previous_response_id, here as at OpenAI
    assert "instructions" not in body
    assert [(i.get("type"), i.get("role")) for i in body["input"]] == [
        ("message", "user"),
        ("message", "assistant"),
        (None, "user"),
    ]
    assert body["input"][1] == first.output[0].model_dump(exclude_unset=True)
    assert body["input"][2] == {"role": "user", "content": "Which word?"}
    items = client.responses.input_items.list(second.id, order="asc").data
    assert [getattr(i, "role", None) for i in items] == ["user", "assistant", "user"]
    row = ledger_rows(stack)[raw.headers["x-tokenway-request-id"]]
    assert second.usage is not None and row["input_tokens"] == second.usage.input_tokens
    assert first.usage is not None and row["input_tokens"] > first.usage.input_tokens


def test_a_conversation_moves_between_translated_and_native_targets(
    stack: Stack, client: openai.OpenAI
) -> None:
    first = client.responses.create(model="m-openai", input="Start here.")
    assert sent(stack, "s-openai").path == "/v1/chat/completions"
    second = client.responses.create(
        model="m-native", input="Go on.", previous_response_id=first.id
    )
    body = sent(stack).body
    assert [i.get("role") for i in body["input"]] == ["user", "assistant", "user"]
    assert body["input"][1]["content"][0]["text"] == first.output_text
    third = client.responses.create(
        model="m-anthropic", input="Finish.", previous_response_id=second.id
    )
    messages = sent(stack, "s-anthropic").body["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant", "user"]
    assert second.output_text in json.dumps(messages)
    assert third.status == "completed" and third.previous_response_id == second.id


@pytest.mark.parametrize("streamed", [False, True])
def test_failover_from_a_native_target_to_chat_completions(
    stack: Stack, client: openai.OpenAI, streamed: bool
) -> None:
    if streamed:
        with client.responses.with_streaming_response.create(
            model="m-native-failover", input="hi", stream=True
        ) as resp:
            headers = resp.headers
            events = list(resp.parse())
        final = events[-1].response
        assert events[-1].type == "response.completed"
    else:
        raw = client.responses.with_raw_response.create(model="m-native-failover", input="hi")
        headers, final = raw.headers, raw.parse()
    assert final.status == "completed" and final.output_text
    assert headers["x-tokenway-provider"] == "openai"
    assert sent(stack, "s-native-down").path == "/v1/responses"
    up = sent(stack, "s-openai")
    assert up.path == "/v1/chat/completions" and "messages" in up.body
    row = ledger_rows(stack)[headers["x-tokenway-request-id"]]
    assert row["attempts"] == 2 and row["provider"] == "openai" and row["status"] == 200
    assert client.responses.retrieve(final.id).id == final.id


def test_a_cut_native_stream_ends_failed_and_is_costed(stack: Stack, client: openai.OpenAI) -> None:
    with client.responses.with_streaming_response.create(
        model="m-native-cut", input="hi", stream=True
    ) as resp:
        rid = resp.headers["x-tokenway-request-id"]
        events = list(resp.parse())
    assert [e.type for e in events][-2:] == ["error", "response.failed"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    failed = events[-1].response
    assert failed.status == "failed" and failed.error is not None
    assert failed.id == events[0].response.id and len(failed.id) == OWN_ID_LEN
    row = ledger_rows(stack)[rid]
    assert row["status"] == 200 and row["flag"] == "UC" and row["provider"] == "native-cut"
    assert row["output_tokens"] > 0


def test_store_false_keeps_nothing(stack: Stack, client: openai.OpenAI) -> None:
    r = client.responses.create(model="m-native", input="forget me", store=False)
    assert sent(stack).body["store"] is False and r.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(r.id)


def test_an_upstream_refusal_reaches_the_client_in_openais_shape(
    stack: Stack, client: openai.OpenAI
) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        client.responses.create(
            model="m-native",
            input="Weather?",
            tools=[WEATHER],
            tool_choice={"type": "function", "name": "missing"},
        )
    assert "missing" in bad.value.message
    assert sent(stack).path == "/v1/responses"

"""The official SDK's `client.responses` against tokenway in front of each provider kind."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from tests.e2e.stack import Stack

from .conftest import KINDS, WEATHER

SIM = {"m-openai": "s-openai", "m-anthropic": "s-anthropic", "m-gemini": "s-gemini"}


def upstream_body(stack: Stack, model: str) -> Any:
    """The body of the last request the model's simulated provider received."""
    return stack.sims[SIM[model]].received[-1].body


def event_types(events: list[Any]) -> list[str]:
    return [e.type for e in events]


@pytest.mark.parametrize("model", KINDS)
def test_create_whole(stack: Stack, client: openai.OpenAI, model: str) -> None:
    raw = client.responses.with_raw_response.create(
        model=model,
        input="Say hello",
        instructions="Answer briefly.",
        max_output_tokens=200,
        temperature=0.5,
        metadata={"feature": "greeting"},
        user="end-user-1",
    )
    r = raw.parse()
    assert r.id.startswith("resp_") and r.object == "response"
    assert r.status == "completed" and r.error is None and r.incomplete_details is None
    assert r.model == model
    assert r.output_text
    assert [item.type for item in r.output] == ["message"]
    assert r.output[0].id.startswith("msg_") and r.output[0].status == "completed"
    assert r.instructions == "Answer briefly." and r.temperature == 0.5
    assert r.metadata == {"feature": "greeting"} and r.user == "end-user-1"
    assert r.max_output_tokens == 200 and r.store is True
    u = r.usage
    assert u is not None and u.input_tokens > 0 and u.output_tokens > 0
    assert u.total_tokens == u.input_tokens + u.output_tokens
    assert raw.headers["x-tokenway-provider"] == model[2:]
    assert raw.headers["x-tokenway-request-id"].startswith("req_")
    # what the upstream was asked: the instructions, the input and the same output limit
    sent = json.dumps(upstream_body(stack, model))
    assert "Answer briefly." in sent and "Say hello" in sent and "200" in sent


@pytest.mark.parametrize("model", KINDS)
def test_create_stream_event_sequence(client: openai.OpenAI, model: str) -> None:
    with client.responses.stream(model=model, input="Say hello") as stream:
        events = list(stream)
        final = stream.get_final_response()
    types = event_types(events)
    assert types[:5] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
    ]
    tail = [t for t in types if t != "response.output_text.delta"]
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
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas and deltas == final.output_text
    done = next(e for e in events if e.type == "response.output_text.done")
    assert done.text == deltas
    assert events[0].response.status == "in_progress" and events[0].response.id == final.id
    assert final.status == "completed"
    assert final.usage is not None and final.usage.output_tokens > 0
    assert final.usage.input_tokens > 0


@pytest.mark.parametrize("model", KINDS)
def test_create_stream_true_iterates_raw_events(client: openai.OpenAI, model: str) -> None:
    events = list(client.responses.create(model=model, input="Say hello", stream=True))
    assert events[0].type == "response.created"
    assert events[-1].type == "response.completed"
    assert events[-1].response.usage is not None
    assert events[-1].response.usage.output_tokens > 0


def _call_of(r: Any) -> Any:
    calls = [item for item in r.output if item.type == "function_call"]
    assert len(calls) == 1
    return calls[0]


@pytest.mark.parametrize("model", KINDS)
@pytest.mark.parametrize("streamed", [False, True])
def test_function_tool_round_trip(
    stack: Stack, client: openai.OpenAI, model: str, streamed: bool
) -> None:
    ask: dict[str, Any] = {"model": model, "input": "Weather in Paris?", "tools": [WEATHER]}
    if streamed:
        with client.responses.stream(**ask) as stream:
            events = list(stream)
            first = stream.get_final_response()
        types = [t for t in event_types(events) if t != "response.function_call_arguments.delta"]
        assert types == [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed",
        ]
        args = "".join(
            e.delta for e in events if e.type == "response.function_call_arguments.delta"
        )
        assert args == _call_of(first).arguments
    else:
        first = client.responses.create(**ask)
    call = _call_of(first)
    assert call.name == "get_weather" and call.status == "completed"
    assert call.id.startswith("fc_") and call.call_id
    assert "city" in json.loads(call.arguments)
    assert first.status == "completed"

    second = client.responses.create(
        model=model,
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 21C"}],
        tools=[WEATHER],
    )
    assert second.status == "completed" and second.output_text
    assert [item.type for item in second.output] == ["message"]
    assert second.previous_response_id == first.id
    # the upstream saw the whole exchange: question, the model's call, and its result
    sent = json.dumps(upstream_body(stack, model))
    assert "Weather in Paris?" in sent and "Sunny, 21C" in sent and "get_weather" in sent


@pytest.mark.parametrize("model", KINDS)
def test_previous_response_id_follow_up(stack: Stack, client: openai.OpenAI, model: str) -> None:
    first = client.responses.create(
        model=model, input="My name is Ada.", instructions="Only for the first turn."
    )
    second = client.responses.create(
        model=model, input="What is my name?", previous_response_id=first.id
    )
    assert second.status == "completed" and second.output_text
    sent = json.dumps(upstream_body(stack, model))
    assert "My name is Ada." in sent and first.output_text in sent and "What is my name?" in sent
    # instructions do not carry over to the next response (as with OpenAI)
    assert "Only for the first turn." not in sent
    assert second.usage is not None and first.usage is not None
    assert second.usage.input_tokens > first.usage.input_tokens
    items = client.responses.input_items.list(second.id, order="asc")
    assert [(i.type, getattr(i, "role", None)) for i in items.data] == [
        ("message", "user"),
        ("message", "assistant"),
        ("message", "user"),
    ]
    assert items.data[1].id == first.output[0].id


@pytest.mark.parametrize("model", KINDS)
def test_stateless_history_of_output_items(client: openai.OpenAI, model: str) -> None:
    # The other way to hold a conversation: send earlier output items back as input.
    first = client.responses.create(model=model, input="Weather in Paris?", tools=[WEATHER])
    call = _call_of(first)
    history: list[Any] = [
        {"role": "user", "content": "Weather in Paris?"},
        *[item.model_dump(exclude_none=True) for item in first.output],
        {"type": "function_call_output", "call_id": call.call_id, "output": "Rain"},
    ]
    second = client.responses.create(model=model, input=history, tools=[WEATHER], store=False)
    assert second.status == "completed" and second.output_text and second.store is False


@pytest.mark.parametrize("model", KINDS)
def test_json_schema_output(stack: Stack, client: openai.OpenAI, model: str) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "temp": {"type": "integer"}},
        "required": ["city", "temp"],
        "additionalProperties": False,
    }
    r = client.responses.create(
        model=model,
        input="Weather as JSON",
        text={"format": {"type": "json_schema", "name": "weather", "schema": schema}},
    )
    assert r.text is not None and r.text.format is not None
    assert r.text.format.type == "json_schema"
    if model == "m-anthropic":
        # Anthropic has no JSON mode: the schema becomes an instruction (the sim ignores it)
        system = upstream_body(stack, model)["system"][-1]["text"]
        assert "JSON Schema" in system and '"temp"' in system
        return
    doc = json.loads(r.output_text)
    assert set(doc) == {"city", "temp"} and isinstance(doc["temp"], int)


@pytest.mark.parametrize("model", ["m-openai", "m-gemini"])
def test_json_object_output(client: openai.OpenAI, model: str) -> None:
    r = client.responses.create(
        model=model, input="Reply in JSON", text={"format": {"type": "json_object"}}
    )
    assert isinstance(json.loads(r.output_text), dict)


@pytest.mark.parametrize("model", ["m-long", "m-long-ant"])
def test_output_limit_makes_the_response_incomplete(client: openai.OpenAI, model: str) -> None:
    r = client.responses.create(model=model, input="Tell me a story", max_output_tokens=16)
    assert r.status == "incomplete"
    assert r.incomplete_details is not None
    assert r.incomplete_details.reason == "max_output_tokens"
    assert r.usage is not None and r.usage.output_tokens == 16
    events = list(
        client.responses.create(
            model=model, input="Tell me a story", max_output_tokens=16, stream=True
        )
    )
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.incomplete_details.reason == "max_output_tokens"
    assert events[-2].type == "response.output_item.done"
    assert events[-2].item.status == "incomplete"


def test_reasoning_effort_reaches_anthropic_and_replays_its_signature(
    stack: Stack, client: openai.OpenAI
) -> None:
    first = client.responses.create(
        model="m-anthropic",
        input="Weather in Paris?",
        tools=[WEATHER],
        reasoning={"effort": "low"},
        max_output_tokens=4000,
    )
    assert stack.sims["s-anthropic"].received[-1].body["thinking"]["type"] == "enabled"
    kinds = [item.type for item in first.output]
    assert kinds == ["reasoning", "function_call"]
    reasoning = first.output[0]
    assert reasoning.content and reasoning.content[0].text
    assert reasoning.encrypted_content
    assert first.usage is not None and first.usage.output_tokens_details.reasoning_tokens > 0
    call = _call_of(first)
    second = client.responses.create(
        model="m-anthropic",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "Fog"}],
        tools=[WEATHER],
        reasoning={"effort": "low"},
        max_output_tokens=4000,
    )
    assert second.status == "completed"
    # the thinking block went back signed, as Anthropic requires with tool use
    sent = stack.sims["s-anthropic"].received[-1].body["messages"]
    thinking = [b for m in sent for b in m["content"] if b.get("type") == "thinking"]
    assert thinking and thinking[0]["signature"]
    assert reasoning.encrypted_content.endswith(thinking[0]["signature"])


def test_reasoning_stream_events(client: openai.OpenAI) -> None:
    with client.responses.stream(
        model="m-anthropic", input="Think first", reasoning={"effort": "low"}
    ) as stream:
        events = list(stream)
        final = stream.get_final_response()
    types = event_types(events)
    assert "response.reasoning_text.delta" in types
    assert types.index("response.reasoning_text.done") < types.index("response.output_text.delta")
    assert [item.type for item in final.output] == ["reasoning", "message"]
    thought = "".join(e.delta for e in events if e.type == "response.reasoning_text.delta")
    assert final.output[0].content[0].text == thought


def test_failover_serves_from_the_next_target(client: openai.OpenAI) -> None:
    raw = client.responses.with_raw_response.create(model="m-failover", input="hi")
    assert raw.headers["x-tokenway-provider"] == "anthropic"
    assert raw.headers["x-tokenway-attempts"] == "2"
    assert raw.parse().status == "completed"


def test_stream_cut_sends_error_then_response_failed(client: openai.OpenAI) -> None:
    events = list(client.responses.create(model="m-cut", input="hi", stream=True))
    types = event_types(events)
    assert types[-2:] == ["error", "response.failed"]
    assert "response.output_text.delta" in types
    failed = events[-1].response
    assert failed.status == "failed" and failed.error is not None
    assert failed.error.code == "server_error"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    stored = client.responses.retrieve(failed.id)
    assert stored.status == "failed"
    assert stored.output[0].status == "incomplete"


EFFORT_FIELD = {
    "m-openai": lambda body: body["reasoning_effort"] == "low",
    "m-anthropic": lambda body: body["thinking"] == {"type": "enabled", "budget_tokens": 1024},
    "m-gemini": lambda body: body["generationConfig"]["thinkingConfig"]["thinkingBudget"] == 1024,
}


@pytest.mark.parametrize("model", KINDS)
def test_reasoning_effort_reaches_each_protocol(
    stack: Stack, client: openai.OpenAI, model: str
) -> None:
    r = client.responses.create(model=model, input="Think", reasoning={"effort": "low"})
    assert r.status == "completed" and r.reasoning is not None and r.reasoning.effort == "low"
    assert EFFORT_FIELD[model](upstream_body(stack, model))


@pytest.mark.parametrize("model", KINDS)
def test_tool_choice_none_answers_in_text(stack: Stack, client: openai.OpenAI, model: str) -> None:
    r = client.responses.create(
        model=model, input="Weather in Paris?", tools=[WEATHER], tool_choice="none"
    )
    assert [item.type for item in r.output] == ["message"] and r.tool_choice == "none"
    forced = client.responses.create(
        model=model,
        input="Weather in Paris?",
        tools=[WEATHER, {**WEATHER, "name": "get_time"}],
        tool_choice={"type": "function", "name": "get_time"},
    )
    assert _call_of(forced).name == "get_time"


PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="


@pytest.mark.parametrize("model", KINDS)
def test_image_input(client: openai.OpenAI, model: str) -> None:
    r = client.responses.create(
        model=model,
        input=[
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "What is this?"},
                    {"type": "input_image", "image_url": f"data:image/png;base64,{PNG}"},
                ],
            }
        ],
    )
    assert r.output_text
    assert r.usage is not None and r.usage.input_tokens >= 85

"""The simulated OpenAI provider's Responses API, driven by the official openai SDK."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from tokenway.sim import text as tx

from .conftest import KEY, MakeSim, fast

WEATHER: Any = {
    "type": "function",
    "name": "get_weather",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
# Long enough for the prefix cache (1024-token blocks) to serve a repeat.
LONG = " ".join(f"fact{i} is true." for i in range(700))


def client(base_url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=base_url, api_key=KEY, max_retries=0)


async def test_whole_response_with_usage(make_sim: MakeSim) -> None:
    sim = await make_sim("openai", fast(output_tokens=12))
    async with client(sim.base_url) as c:
        r = await c.responses.create(
            model="gpt-4o-mini", input="Tell me about rivers.", instructions="Be brief."
        )
    assert r.object == "response" and r.status == "completed" and r.id.startswith("resp_")
    assert [i.type for i in r.output] == ["message"]
    assert r.output_text and tx.count_tokens(r.output_text) == 12
    assert r.instructions == "Be brief." and r.store is True
    u = r.usage
    assert u is not None and u.output_tokens == 12 and u.input_tokens > 5
    assert u.total_tokens == u.input_tokens + u.output_tokens
    assert u.input_tokens_details.cached_tokens == 0
    assert u.output_tokens_details.reasoning_tokens == 0
    assert sim.received[-1].path == "/v1/responses"


async def test_cached_and_reasoning_tokens(make_sim: MakeSim) -> None:
    sim = await make_sim("openai", fast(output_tokens=12, reasoning_tokens=30))
    async with client(sim.base_url) as c:
        first = await c.responses.create(model="o4-mini", input=LONG)
        second = await c.responses.create(
            model="o4-mini", input=LONG, include=["reasoning.encrypted_content"]
        )
    assert first.usage is not None and second.usage is not None
    assert first.usage.input_tokens_details.cached_tokens == 0
    assert second.usage.input_tokens_details.cached_tokens >= 1024
    assert second.usage.output_tokens_details.reasoning_tokens == 30
    assert second.usage.output_tokens == 42
    assert [i.type for i in second.output] == ["reasoning", "message"]
    assert first.output[0].type == "reasoning" and first.output[0].encrypted_content is None
    assert second.output[0].type == "reasoning" and second.output[0].encrypted_content


async def test_stream_event_sequence(make_sim: MakeSim) -> None:
    sim = await make_sim("openai", fast(output_tokens=8, reasoning_tokens=5))
    async with (
        client(sim.base_url) as c,
        c.responses.stream(model="o4-mini", input="hello") as stream,
    ):
        events = [e async for e in stream]
        final = await stream.get_final_response()
    types = [e.type for e in events if e.type != "response.output_text.delta"]
    assert types == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",  # reasoning
        "response.output_item.done",
        "response.output_item.added",  # message
        "response.content_part.added",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) == 8 and "".join(deltas) == final.output_text
    assert final.usage is not None and final.usage.output_tokens_details.reasoning_tokens == 5


@pytest.mark.parametrize("streamed", [False, True])
async def test_function_call_then_its_output(make_sim: MakeSim, streamed: bool) -> None:
    sim = await make_sim("openai", fast(output_tokens=6))
    async with client(sim.base_url) as c:
        if streamed:
            async with c.responses.stream(
                model="gpt-4o-mini", input="Weather in Paris?", tools=[WEATHER]
            ) as stream:
                events = [e async for e in stream]
                first = await stream.get_final_response()
            args = "".join(
                e.delta for e in events if e.type == "response.function_call_arguments.delta"
            )
        else:
            first = await c.responses.create(
                model="gpt-4o-mini", input="Weather in Paris?", tools=[WEATHER]
            )
        (call,) = first.output
        assert call.type == "function_call" and call.name == "get_weather"
        assert "city" in call.arguments
        if streamed:
            assert args == call.arguments
        second = await c.responses.create(
            model="gpt-4o-mini",
            tools=[WEATHER],
            input=[
                {"role": "user", "content": "Weather in Paris?"},
                call.model_dump(exclude_none=True),  # type: ignore[list-item]
                {"type": "function_call_output", "call_id": call.call_id, "output": "21C"},
            ],
        )
    assert second.output_text and second.output[0].type == "message"


async def test_stateless_refusals(make_sim: MakeSim) -> None:
    sim = await make_sim("openai", fast())
    async with client(sim.base_url) as c:
        with pytest.raises(openai.BadRequestError) as bad:
            await c.responses.create(model="gpt-4o-mini", input="x", previous_response_id="resp_1")
        assert bad.value.code == "previous_response_not_found"
        with pytest.raises(openai.NotFoundError):
            await c.responses.create(
                model="gpt-4o-mini",
                input=[
                    {"type": "reasoning", "id": "rs_1", "summary": []},
                    {"role": "user", "content": "hi"},
                ],
            )

"""Batches of `/v1/responses` lines with the official SDK: each line runs in-process through the
Responses handler, its answer is a Response object in the output file, its Response is stored
for `previous_response_id` like any other, and its ledger row is in mode batch."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import openai
from openai.types.responses import Response

from tests.e2e.stack import Stack
from tokenway.accounting.ledger import read_requests

from .conftest import records, upload, wait_done

MTOK = Decimal(1_000_000)
# the config's gpt-4o-mini price (0.15 in, 0.60 out per 1M) with its batch multiplier of 0.5
BATCH_IN, BATCH_OUT = Decimal("0.075"), Decimal("0.30")
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


def line(custom_id: str, **body: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/responses",
        "body": {"model": "m-chat", **body},
    }


def test_responses_lines_run_to_response_objects_on_the_ledger_in_batch_mode(
    stack: Stack, client: openai.OpenAI
) -> None:
    # a line may continue a conversation this key stored before the batch
    earlier = client.responses.create(model="m-chat", input="Remember the word 'heron'.")
    lines = [
        line("plain", input="Say hello", instructions="Answer briefly.", max_output_tokens=100),
        line("tool", input="Weather in Paris?", tools=[WEATHER]),
        line("follow", input="Which word?", previous_response_id=earlier.id),
        # refused by the gateway (hosted tools are not served): the error file, 400
        line("hosted", input="search", tools=[{"type": "web_search"}]),
        # a conversation that does not exist for this key: the error file, 400
        line("lost", input="again", previous_response_id="resp_missing"),
    ]
    created = client.batches.create(
        input_file_id=upload(client, lines), endpoint="/v1/responses", completion_window="24h"
    )
    batch = wait_done(client, created.id)
    assert batch.status == "completed" and batch.endpoint == "/v1/responses"
    assert batch.request_counts is not None
    assert (batch.request_counts.completed, batch.request_counts.failed) == (3, 2)

    out = {r["custom_id"]: r for r in records(client, batch.output_file_id)}
    assert sorted(out) == ["follow", "plain", "tool"]
    answers: dict[str, Response] = {}
    for cid, r in out.items():
        assert r["error"] is None and r["response"]["status_code"] == 200
        answers[cid] = Response.model_validate(r["response"]["body"])
    for r in answers.values():
        assert r.object == "response" and r.status == "completed" and r.model == "m-chat"
        assert r.id.startswith("resp_") and r.usage is not None and r.usage.output_tokens > 0
    assert answers["plain"].output_text and answers["plain"].instructions == "Answer briefly."
    assert answers["plain"].max_output_tokens == 100
    (call,) = [item for item in answers["tool"].output if item.type == "function_call"]
    assert call.name == "get_weather" and "city" in call.arguments
    assert answers["follow"].previous_response_id == earlier.id

    errors = {r["custom_id"]: r for r in records(client, batch.error_file_id)}
    assert sorted(errors) == ["hosted", "lost"]
    assert errors["hosted"]["response"]["status_code"] == 400
    assert "web search" in errors["hosted"]["response"]["body"]["error"]["message"]
    lost = errors["lost"]["response"]
    assert lost["status_code"] == 400
    assert lost["body"]["error"]["code"] == "previous_response_not_found"

    # the batch's usage is the sum of its answers'
    assert batch.usage is not None
    assert batch.usage.input_tokens == sum(
        r.usage.input_tokens for r in answers.values() if r.usage
    )
    assert batch.usage.output_tokens == sum(
        r.usage.output_tokens for r in answers.values() if r.usage
    )

    # a stored line answer is a conversation like any other: retrieve it, continue it
    follow = answers["follow"]
    assert client.responses.retrieve(follow.id).output_text == follow.output_text
    items = client.responses.input_items.list(follow.id, order="asc").data
    assert [i.type for i in items] == ["message", "message", "message"]
    again = client.responses.create(model="m-chat", input="And?", previous_response_id=follow.id)
    assert again.status == "completed"

    # one ledger row per served line: api openai.responses, mode batch, batch-priced
    stack.flush()
    ids = {r["response"]["request_id"] for r in out.values()}
    rows = {
        r["request_id"]: r
        for r in read_requests(stack.config.raw.storage.ledger)
        if r["request_id"] in ids
    }
    assert set(rows) == ids
    by_line = {cid: rows[r["response"]["request_id"]] for cid, r in out.items()}
    for cid, row in by_line.items():
        assert row["api"] == "openai.responses" and row["mode"] == "batch", cid
        assert row["status"] == 200 and row["key"] == "app" and row["model"] == "m-chat"
        assert row["provider"] == "openai" and row["stream"] is False
        usage = answers[cid].usage
        assert usage is not None
        assert (row["input_tokens"], row["output_tokens"]) == (
            usage.input_tokens,
            usage.output_tokens,
        )
        expected = (row["input_tokens"] * BATCH_IN + row["output_tokens"] * BATCH_OUT) / MTOK
        assert row["cost_usd"] == expected > 0
        assert row["revenue_usd"] == row["cost_usd"]

"""Responses traffic on the ledger: costed exactly like chat completions, with `api` a dimension."""

from __future__ import annotations

from decimal import Decimal

import openai

from tests.e2e.stack import Stack
from tokenway.accounting.ledger import read_requests
from tokenway.reports.spend import spend_report

from .conftest import PRICE, ledger_rows

# Long enough for the simulated provider's prefix cache (1024 tokens) to serve a repeat.
LONG = " ".join(f"fact{i} is true." for i in range(700))
MILLION = Decimal(1_000_000)


def cost(row: dict[str, object]) -> Decimal:
    fresh = int(row["input_tokens"]) - int(row["cache_read_tokens"])  # type: ignore[call-overload]
    return (
        fresh * Decimal(str(PRICE["input"]))
        + int(row["cache_read_tokens"]) * Decimal(str(PRICE["cache_read"]))  # type: ignore[call-overload]
        + int(row["output_tokens"]) * Decimal(str(PRICE["output"]))  # type: ignore[call-overload]
    ) / MILLION


def test_cached_and_reasoning_tokens_costed_like_chat(stack: Stack, client: openai.OpenAI) -> None:
    client.responses.create(model="m-reason", input=LONG)  # warms the prefix cache
    raw = client.responses.with_raw_response.create(model="m-reason", input=LONG)
    r = raw.parse()
    u = r.usage
    assert u is not None
    assert u.input_tokens_details.cached_tokens > 0
    assert u.output_tokens_details.reasoning_tokens > 0
    row = ledger_rows(stack)[raw.headers["x-tokenway-request-id"]]
    assert row["api"] == "openai.responses" and row["status"] == 200 and row["stream"] is False
    assert row["provider"] == "openai" and row["provider_model"] == "o4-mini"
    assert row["input_tokens"] == u.input_tokens
    assert row["cache_read_tokens"] == u.input_tokens_details.cached_tokens
    assert row["output_tokens"] == u.output_tokens
    assert row["reasoning_tokens"] == u.output_tokens_details.reasoning_tokens
    assert Decimal(row["cost_usd"]) == cost(row)
    header = raw.headers["x-tokenway-cost-usd"]
    assert header == row["cost_usd"][: len(header)]

    # the same prompt as a chat completion: the same usage, so the same cost
    chat = client.chat.completions.with_raw_response.create(
        model="m-reason", messages=[{"role": "user", "content": LONG}]
    )
    crow = ledger_rows(stack)[chat.headers["x-tokenway-request-id"]]
    assert crow["api"] == "openai.chat"
    for field in ("input_tokens", "cache_read_tokens", "output_tokens", "reasoning_tokens"):
        assert crow[field] == row[field], field
    assert crow["cost_usd"] == row["cost_usd"]


def test_streamed_responses_are_costed(stack: Stack, client: openai.OpenAI) -> None:
    with client.responses.with_streaming_response.create(
        model="m-reason", input="stream me", stream=True
    ) as resp:
        rid = resp.headers["x-tokenway-request-id"]
        events = list(resp.parse())
    final = events[-1].response
    row = ledger_rows(stack)[rid]
    assert row["api"] == "openai.responses" and row["stream"] is True
    assert row["output_tokens"] == final.usage.output_tokens > 0
    assert row["reasoning_tokens"] == final.usage.output_tokens_details.reasoning_tokens > 0
    assert row["input_tokens"] == final.usage.input_tokens
    assert Decimal(row["cost_usd"]) == cost(row) > 0


def test_cut_stream_is_recorded(stack: Stack, client: openai.OpenAI) -> None:
    with client.responses.with_streaming_response.create(
        model="m-cut", input="hi", stream=True
    ) as resp:
        rid = resp.headers["x-tokenway-request-id"]
        assert [e.type for e in resp.parse()][-1] == "response.failed"
    row = ledger_rows(stack)[rid]
    assert row["status"] == 200 and row["flag"] == "UC"
    assert row["output_tokens"] > 0


def test_reports_split_by_api(stack: Stack, client: openai.OpenAI) -> None:
    client.responses.create(model="m-openai", input="for the report")
    client.chat.completions.create(model="m-openai", messages=[{"role": "user", "content": "x"}])
    stack.flush()
    groups, total = spend_report(read_requests(stack.config.raw.storage.ledger), "api")
    by = {g.name: g for g in groups}
    assert by["openai.responses"].requests >= 1 and by["openai.chat"].requests >= 1
    assert sum(g.requests for g in groups) == total.requests

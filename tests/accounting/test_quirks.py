"""One golden test per provider usage quirk: the provider's own usage shape, read whole and
streamed, normalised to one Usage and costed exactly (to the nano-dollar) from a price table."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tokenway.accounting.prices import PriceBook
from tokenway.config.schema import PriceConfig
from tokenway.domain.types import Usage, UsageUpdate
from tokenway.translate import anthropic_messages, gemini, openai_chat
from tokenway.translate.sse import merge_usage

D = Decimal
M = D(1_000_000)


def streamed(decoder: Any, frames: list[tuple[str | None, dict[str, Any]]]) -> Usage:
    usage: Usage | None = None
    for event, data in frames:
        for ev in decoder.feed(event, data):
            if isinstance(ev, UsageUpdate):
                usage = merge_usage(usage, ev.usage)
    for ev in decoder.finish():
        if isinstance(ev, UsageUpdate):
            usage = merge_usage(usage, ev.usage)
    assert usage is not None
    return usage


def book(**fields: float) -> PriceBook:
    return PriceBook([PriceConfig(provider="p", model="m", **fields)])  # type: ignore[arg-type]


def openai_pair(usage: dict[str, Any]) -> tuple[Usage, Usage]:
    whole = openai_chat.parse_response(
        {
            "id": "c",
            "object": "chat.completion",
            "created": 1,
            "model": "m",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "hi"},
                    "finish_reason": "stop",
                }
            ],
            "usage": usage,
        }
    ).usage
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    frames: list[tuple[str | None, dict[str, Any]]] = [
        (
            None,
            {**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "hi"}}]},
        ),
        (None, {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
        (None, {**chunk, "choices": [], "usage": usage}),
    ]
    return whole, streamed(openai_chat.StreamDecoder(), frames)


def test_openai_cached_tokens_are_a_subset_of_the_prompt() -> None:
    whole, stream = openai_pair(
        {
            "prompt_tokens": 2000,
            "completion_tokens": 300,
            "total_tokens": 2300,
            "prompt_tokens_details": {"cached_tokens": 1536},
            "completion_tokens_details": {"reasoning_tokens": 200},
        }
    )
    assert whole == stream
    assert (whole.input_tokens, whole.cache_read_tokens) == (2000, 1536)
    assert (whole.output_tokens, whole.reasoning_tokens) == (300, 200)
    cost = book(input=2.5, cache_read=1.25, output=10).cost("p", "m", whole)
    # 464 uncached at 2.5, 1536 cached at 1.25, 300 output (reasoning included) at 10
    assert cost == (464 * D("2.5") + 1536 * D("1.25") + 300 * 10) / M == D("0.00608")


def test_deepseek_hit_and_miss() -> None:
    whole, stream = openai_pair(
        {
            "prompt_tokens": 1000,
            "completion_tokens": 50,
            "total_tokens": 1050,
            "prompt_cache_hit_tokens": 768,
            "prompt_cache_miss_tokens": 232,
        }
    )
    assert whole == stream
    assert (whole.input_tokens, whole.cache_read_tokens) == (1000, 768)
    cost = book(input=0.27, cache_read=0.07, output=1.1).cost("p", "m", whole)
    assert cost == (232 * D("0.27") + 768 * D("0.07") + 50 * D("1.1")) / M


def test_anthropic_reads_and_5m_1h_writes() -> None:
    usage = {
        "input_tokens": 100,
        "cache_read_input_tokens": 4000,
        "cache_creation_input_tokens": 3000,
        "cache_creation": {"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 2000},
        "output_tokens": 250,
    }
    whole = anthropic_messages.parse_response(
        {
            "id": "msg",
            "type": "message",
            "role": "assistant",
            "model": "m",
            "content": [{"type": "text", "text": "hi"}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": usage,
        }
    ).usage
    start_usage = {**usage, "output_tokens": 1}
    frames: list[tuple[str | None, dict[str, Any]]] = [
        (
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg",
                    "type": "message",
                    "role": "assistant",
                    "model": "m",
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": start_usage,
                },
            },
        ),
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "hi"},
            },
        ),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": 250},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    stream = streamed(anthropic_messages.StreamDecoder(), frames)
    assert whole == stream
    assert whole.input_tokens == 7100  # Anthropic's input_tokens excludes reads and writes
    assert (whole.cache_read_tokens, whole.cache_write_tokens) == (4000, 3000)
    assert whole.cache_write_1h_tokens == 2000
    cost = book(input=3, cache_read=0.3, cache_write=3.75, cache_write_1h=6, output=15).cost(
        "p", "m", whole
    )
    expected = (100 * 3 + 4000 * D("0.3") + 1000 * D("3.75") + 2000 * 6 + 250 * 15) / M
    assert cost == expected == D("0.021")


def test_gemini_cached_and_thoughts() -> None:
    meta = {
        "promptTokenCount": 5000,
        "cachedContentTokenCount": 4096,
        "candidatesTokenCount": 120,
        "thoughtsTokenCount": 880,
        "totalTokenCount": 6000,
    }
    cand = {"content": {"role": "model", "parts": [{"text": "hi"}]}, "finishReason": "STOP"}
    whole = gemini.parse_response({"candidates": [cand], "usageMetadata": meta}, "m").usage
    stream = streamed(
        gemini.StreamDecoder("m"),
        [(None, {"candidates": [cand], "usageMetadata": meta})],
    )
    assert whole == stream
    assert (whole.input_tokens, whole.cache_read_tokens) == (5000, 4096)
    assert (whole.output_tokens, whole.reasoning_tokens) == (1000, 880)
    cost = book(input=1.25, cache_read=0.125, output=10).cost("p", "m", whole)
    assert cost == (904 * D("1.25") + 4096 * D("0.125") + 1000 * 10) / M


def test_cny_prices_convert_at_the_configured_rate() -> None:
    pb = PriceBook(
        [PriceConfig(provider="p", model="m", input=2.0, output=8.0, currency="CNY")],
        fx={"CNY": D("7.2")},
    )
    cost = pb.cost("p", "m", Usage(input_tokens=1_000_000, output_tokens=500_000))
    assert cost == (D(2) + D(4)) / D("7.2")


def test_price_change_applies_from_its_effective_date() -> None:
    pb = PriceBook(
        [
            PriceConfig(provider="p", model="m", input=1.0, output=2.0),
            PriceConfig(
                provider="p", model="m", input=0.5, output=1.0, effective_from="2026-11-01"
            ),
        ]
    )
    u = Usage(input_tokens=1000, output_tokens=1000)
    assert pb.cost("p", "m", u, datetime(2026, 10, 31, 23, 59, tzinfo=UTC)) == D("0.003")
    assert pb.cost("p", "m", u, datetime(2026, 11, 1, 0, 0, tzinfo=UTC)) == D("0.0015")


def test_catalog_off_peak_window_and_long_prompt_tier() -> None:
    pb = PriceBook([])
    u = Usage(input_tokens=1000, output_tokens=1000)
    peak = pb.price("deepseek", "deepseek-chat", datetime(2026, 11, 28, 3, 0, tzinfo=UTC))
    off = pb.price("deepseek", "deepseek-chat", datetime(2026, 11, 28, 17, 0, tzinfo=UTC))
    assert peak is not None and off is not None and off.input < peak.input
    assert (
        pb.cost("deepseek", "deepseek-chat", u, datetime(2026, 11, 28, 17, 0, tzinfo=UTC))
        == (1000 * off.input + 1000 * off.output) / M
    )
    price = pb.price("anthropic", "claude-sonnet-4-5")
    assert price is not None and price.tiers, "the catalog should price Claude's >200k prompts"
    tier = price.tiers[0]
    big = Usage(input_tokens=tier.above_input_tokens + 1, output_tokens=10)
    assert (
        pb.cost("anthropic", "claude-sonnet-4-5", big)
        == (big.input_tokens * tier.input + 10 * tier.output) / M
    )


_n = st.integers(min_value=0, max_value=2_000_000)


@settings(max_examples=60, deadline=None)
@given(prompt=_n, cached=_n, completion=_n, reasoning=_n, price=st.decimals(0, 100, places=3))
def test_streamed_and_whole_delivery_cost_the_same(
    prompt: int, cached: int, completion: int, reasoning: int, price: Decimal
) -> None:
    cached = min(cached, prompt)
    reasoning = min(reasoning, completion)
    whole, stream = openai_pair(
        {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached},
            "completion_tokens_details": {"reasoning_tokens": reasoning},
        }
    )
    pb = book(input=float(price), cache_read=float(price) / 2, output=float(price) * 4)
    assert whole == stream
    cost = pb.cost("p", "m", whole)
    assert cost == pb.cost("p", "m", stream) and cost >= 0

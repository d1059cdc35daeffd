"""One golden test per provider usage quirk: the provider's own usage shape, read whole and
streamed, normalised to one Usage and costed exactly (to the nano-dollar) from a price table."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenway.accounting.ledger import AttemptRow, RequestRow, open_ledger, read_requests
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


def book(**fields: Any) -> PriceBook:
    """A book with one config entry for p/m, given as YAML would give it."""
    return PriceBook([msgspec.convert({"provider": "p", "model": "m", **fields}, PriceConfig)])


def openai_pair(usage: dict[str, Any], service_tier: str | None = None) -> tuple[Usage, Usage]:
    """The usage of one OpenAI-wire answer read whole and streamed (service tier on every
    chunk, as OpenAI sends it)."""
    tier = {} if service_tier is None else {"service_tier": service_tier}
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
            **tier,
        }
    ).usage
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m", **tier}
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


# ---- Qwen / DashScope: implicit and explicit context cache ---------------------------------

# qwen-plus on Alibaba Cloud's international site, USD per 1M: implicit hits cost 20% of input,
# explicit hits 10%, explicit cache creation 125% (a 5-minute write).
QWEN = {
    "input": 0.4,
    "output": 1.2,
    "cache_read": 0.08,
    "cache_read_explicit": 0.04,
    "cache_write": 0.5,
}


def test_qwen_implicit_hit() -> None:
    whole, stream = openai_pair(
        {
            "prompt_tokens": 3019,
            "completion_tokens": 104,
            "total_tokens": 3123,
            "prompt_tokens_details": {"cached_tokens": 2048},
        }
    )
    assert whole == stream
    assert (whole.input_tokens, whole.cache_read_tokens, whole.cache_write_tokens) == (
        3019,
        2048,
        0,
    )
    assert not whole.cache_explicit
    # 971 uncached at 0.4, 2048 implicit hits at 0.08, 104 output at 1.2
    assert book(**QWEN).cost("p", "m", whole) == D("0.00067704")


def test_qwen_explicit_creation_then_explicit_hit() -> None:
    created, created_s = openai_pair(
        {
            "prompt_tokens": 1634,
            "completion_tokens": 50,
            "total_tokens": 1684,
            "prompt_tokens_details": {
                "cached_tokens": 0,
                "cache_creation": {"ephemeral_5m_input_tokens": 1605},
                "cache_creation_input_tokens": 1605,
                "cache_type": "ephemeral",
            },
        }
    )
    hit, hit_s = openai_pair(
        {
            "prompt_tokens": 1634,
            "completion_tokens": 50,
            "total_tokens": 1684,
            "prompt_tokens_details": {
                "cached_tokens": 1605,
                "cache_creation": {"ephemeral_5m_input_tokens": 0},
                "cache_creation_input_tokens": 0,
                "cache_type": "ephemeral",
            },
        }
    )
    assert created == created_s and hit == hit_s
    assert (created.cache_read_tokens, created.cache_write_tokens) == (0, 1605)
    assert created.cache_write_1h_tokens == 0 and created.cache_explicit
    assert (hit.cache_read_tokens, hit.cache_write_tokens, hit.cache_explicit) == (1605, 0, True)
    pb = book(**QWEN)
    # 29 uncached at 0.4, 1605 written at 0.5 (125%), 50 output at 1.2
    assert pb.cost("p", "m", created) == D("0.0008741")
    # 29 uncached at 0.4, 1605 explicit hits at 0.04 (10%, not the implicit 20%), 50 at 1.2
    assert pb.cost("p", "m", hit) == D("0.0001358")
    # without an explicit price the explicit hit costs what an implicit one does
    no_explicit = book(**{k: v for k, v in QWEN.items() if k != "cache_read_explicit"})
    assert no_explicit.cost("p", "m", hit) == D("0.0002")  # 11.6 + 128.4 + 60


def test_qwen_explicit_flag_survives_a_later_usage_chunk_without_it() -> None:
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    details = {"cached_tokens": 1605, "cache_creation_input_tokens": 0, "cache_type": "ephemeral"}
    stream = streamed(
        openai_chat.StreamDecoder(),
        [
            (None, {**chunk, "choices": [{"index": 0, "delta": {"content": "hi"}}]}),
            (
                None,
                {
                    **chunk,
                    "choices": [],
                    "usage": {"prompt_tokens": 1634, "prompt_tokens_details": details},
                },
            ),
            (
                None,
                {
                    **chunk,
                    "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 1634, "completion_tokens": 50},
                },
            ),
        ],
    )
    assert (stream.cache_read_tokens, stream.output_tokens, stream.cache_explicit) == (
        1605,
        50,
        True,
    )
    assert book(**QWEN).cost("p", "m", stream) == D("0.0001358")


# ---- batch and service tiers -----------------------------------------------------------------

DAY = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)  # catalog variants below start 2026-10-12/14
CACHED_USAGE = {
    "prompt_tokens": 10_000,
    "completion_tokens": 1_000,
    "total_tokens": 11_000,
    "prompt_tokens_details": {"cached_tokens": 4_000},
}


def test_batch_discount_from_config_multiplier() -> None:
    whole, stream = openai_pair(CACHED_USAGE)
    assert whole == stream
    pb = book(input=2, cache_read=0.5, output=8, multipliers={"batch": 0.5})
    # 6000 uncached at 2, 4000 cached at 0.5, 1000 output at 8
    assert pb.cost("p", "m", whole, DAY) == D("0.022")
    assert pb.cost("p", "m", whole, DAY, mode="batch") == D("0.011")
    assert pb.cost("p", "m", stream, DAY, batch=True) == D("0.011")
    assert pb.cost("p", "m", whole, DAY, mode="async") == D("0.022")  # no async multiplier


def test_batch_discount_from_catalog_and_config_multiplier_replacing_it() -> None:
    whole, stream = openai_pair(CACHED_USAGE)
    catalog = PriceBook([])
    # genai-prices lists gpt-5-mini at 0.25/0.025/2, batch 0.125/0.0125/1 (from 2026-10-14)
    assert catalog.cost("openai", "gpt-5-mini", whole, DAY) == D("0.0036")
    assert catalog.cost("openai", "gpt-5-mini", whole, DAY, mode="batch") == D("0.0018")
    assert catalog.cost("openai", "gpt-5-mini", stream, DAY, batch=True) == D("0.0018")
    # a config multiplier replaces the catalog's batch price instead of compounding with it
    own = PriceBook(
        [PriceConfig(provider="openai", model="gpt-5-mini", multipliers={"batch": 0.6})]
    )
    assert own.cost("openai", "gpt-5-mini", whole, DAY, mode="batch") == D("0.00216")


def test_a_batch_line_tokenway_runs_itself_is_billed_at_the_normal_price() -> None:
    # A line sent to the provider's normal endpoint is not a batch-API request: the provider
    # bills its normal price, so the catalog's batch price must not apply ...
    whole, stream = openai_pair(CACHED_USAGE)
    catalog = PriceBook([])
    for usage in (whole, stream):
        assert catalog.cost("openai", "gpt-5-mini", usage, DAY, mode="batch", batch_api=False) == (
            D("0.0036")
        )
    # ... while the operator's own price for such work (a config multiplier) still does
    own = PriceBook(
        [PriceConfig(provider="openai", model="gpt-5-mini", multipliers={"batch": 0.6})]
    )
    assert own.cost("openai", "gpt-5-mini", whole, DAY, mode="batch", batch_api=False) == (
        D("0.00216")
    )
    # and a provider that reports it served the batch tier is billed as it says
    served = msgspec.structs.replace(whole, service_tier="batch")
    assert catalog.cost("openai", "gpt-5-mini", served, DAY, batch_api=False) == D("0.0018")


def test_downgraded_service_tier_is_billed_as_served_catalog() -> None:
    # The client asked for priority; what the response reports is what is billed.
    catalog = PriceBook([])
    served = {}
    for tier in ("priority", "default", "flex"):
        whole, stream = openai_pair(CACHED_USAGE, service_tier=tier)
        assert whole == stream and whole.service_tier == tier
        served[tier] = catalog.cost("openai", "gpt-5-mini", whole, DAY)
        assert catalog.cost("openai", "gpt-5-mini", stream, DAY) == served[tier]
    # priority 0.45/0.045/3.6; default is the standard price; flex 0.125/0.0125/1
    assert served == {"priority": D("0.00648"), "default": D("0.0036"), "flex": D("0.0018")}


def test_downgraded_service_tier_is_billed_as_served_config() -> None:
    pb = book(input=2, cache_read=0.5, output=8, multipliers={"flex": 0.5, "priority": 1.75})
    costs = {}
    for tier in ("priority", "default", "flex", "auto", None):
        whole, stream = openai_pair(CACHED_USAGE, service_tier=tier)
        assert whole == stream
        costs[tier] = pb.cost("p", "m", whole, DAY)
    assert costs == {
        "priority": D("0.0385"),
        "default": D("0.022"),
        "flex": D("0.011"),
        "auto": D("0.022"),
        None: D("0.022"),
    }


# ---- time of day and prompt length from config -----------------------------------------------


def test_time_of_day_window_from_config_wraps_midnight() -> None:
    whole, stream = openai_pair({"prompt_tokens": 1000, "completion_tokens": 500})
    assert whole == stream
    pb = book(input=1, output=2, windows=[{"start": "16:30", "end": "00:30", "multiplier": 0.5}])
    full, half = D("0.002"), D("0.001")

    def at(day: int, hour: int, minute: int, second: int = 0) -> Decimal:
        return pb.cost("p", "m", whole, datetime(2026, 11, day, hour, minute, second, tzinfo=UTC))

    assert at(28, 16, 29, 59) == full
    assert at(28, 16, 30) == half
    assert at(28, 23, 59, 59) == half
    assert at(29, 0, 29, 59) == half
    assert at(29, 0, 30) == full
    assert pb.cost("p", "m", stream, datetime(2026, 11, 28, 20, 0, tzinfo=UTC)) == half


def test_prompt_length_tier_from_config_counts_cached_tokens() -> None:
    pb = book(
        input=3,
        cache_read=0.3,
        output=15,
        tiers=[{"above_input_tokens": 200_000, "input": 6, "output": 22.5}],
    )
    long_prompt = {
        "prompt_tokens": 250_000,
        "completion_tokens": 1_000,
        "prompt_tokens_details": {"cached_tokens": 100_000},
    }
    whole, stream = openai_pair(long_prompt)
    assert whole == stream
    # 250k prompt tokens (150k of them uncached) pick the tier; its omitted cache_read stays 0.3:
    # 150k at 6 + 100k at 0.3 + 1k at 22.5
    assert pb.cost("p", "m", whole) == pb.cost("p", "m", stream) == D("0.9525")
    edge, _ = openai_pair({**long_prompt, "prompt_tokens": 200_000})
    # at the threshold the base prices apply: 100k at 3 + 100k at 0.3 + 1k at 15
    assert pb.cost("p", "m", edge) == D("0.345")


# ---- property: any price table, any delivery ------------------------------------------------

_n = st.integers(min_value=0, max_value=2_000_000)
_price = st.decimals(0, 100, places=3)
_mult = st.decimals(0, 3, places=2)
_TIER_FIELDS = ("input", "output", "cache_read", "cache_write", "cache_read_explicit")
_TIERS = st.sampled_from([None, "default", "auto", "flex", "priority", "scale"])
_MODES = st.sampled_from(["realtime", "batch", "async"])


@st.composite
def price_tables(draw: st.DrawFn) -> dict[str, Any]:
    """A config entry with random base prices, multipliers, windows and prompt-length tiers;
    each tier costs at least the level below it, field by field, as providers price them."""
    base = {f: draw(_price) for f in _TIER_FIELDS}
    table: dict[str, Any] = {f: float(v) for f, v in base.items()}
    table["multipliers"] = {
        k: float(draw(_mult))
        for k in draw(st.sets(st.sampled_from(["batch", "async", "flex", "priority"])))
    }
    if draw(st.booleans()):
        table["windows"] = [{"start": "16:30", "end": "00:30", "multiplier": float(draw(_mult))}]
    tiers, level = [], dict(base)
    for start in sorted(draw(st.sets(st.integers(0, 3_000_000), max_size=3))):
        tier: dict[str, Any] = {"above_input_tokens": start}
        for f in _TIER_FIELDS:
            # an omitted field takes the base value: allowed only while no tier raised it
            if level[f] != base[f] or draw(st.booleans()):
                level[f] += draw(_price)
                tier[f] = float(level[f])
        tiers.append(tier)
    if tiers or draw(st.booleans()):
        table["tiers"] = tiers
    return table


def _qwen_usage(parts: list[int], explicit: bool) -> dict[str, Any]:
    uncached, cached, created, completion = parts
    details: dict[str, Any] = {"cached_tokens": cached, "cache_creation_input_tokens": created}
    if explicit:
        details["cache_type"] = "ephemeral"
    return {
        "prompt_tokens": uncached + cached + created,
        "completion_tokens": completion,
        "prompt_tokens_details": details,
    }


@settings(max_examples=80, deadline=None)
@given(
    table=price_tables(),
    parts=st.lists(_n, min_size=4, max_size=4),
    which=st.integers(0, 3),
    extra=_n,
    explicit=st.booleans(),
    tier=_TIERS,
    mode=_MODES,
    hour=st.integers(0, 23),
)
def test_any_price_table_costs_streamed_as_whole_non_negative_and_monotone(
    table: dict[str, Any],
    parts: list[int],
    which: int,
    extra: int,
    explicit: bool,
    tier: str | None,
    mode: str,
    hour: int,
) -> None:
    pb = book(**table)
    at = datetime(2026, 11, 28, hour, 45, tzinfo=UTC)
    whole, stream = openai_pair(_qwen_usage(parts, explicit), service_tier=tier)
    assert whole == stream
    cost = pb.cost("p", "m", whole, at, mode=mode)
    assert cost == pb.cost("p", "m", stream, at, mode=mode) and cost >= 0
    more = list(parts)
    more[which] += extra
    bigger, _ = openai_pair(_qwen_usage(more, explicit), service_tier=tier)
    assert pb.cost("p", "m", bigger, at, mode=mode) >= cost


_junk = st.none() | st.integers(-5, 10**7) | st.floats(allow_nan=True) | st.text(max_size=2)


@given(
    st.fixed_dictionaries(
        {"prompt_tokens": _junk, "completion_tokens": _junk},
        optional={
            "prompt_tokens_details": st.none()
            | st.fixed_dictionaries(
                {},
                optional={
                    "cached_tokens": _junk,
                    "cache_creation_input_tokens": _junk,
                    "cache_creation": st.none()
                    | st.fixed_dictionaries(
                        {},
                        optional={
                            "ephemeral_5m_input_tokens": _junk,
                            "ephemeral_1h_input_tokens": _junk,
                        },
                    ),
                    "cache_type": st.sampled_from(["ephemeral", "other", None]),
                },
            )
        },
    )
)
def test_qwen_cache_fields_stay_subsets_of_the_prompt(raw: dict[str, Any]) -> None:
    u = openai_chat.parse_usage(raw)
    assert min(u.cache_read_tokens, u.cache_write_tokens, u.cache_write_1h_tokens) >= 0
    assert u.cache_read_tokens + u.cache_write_tokens <= u.input_tokens
    assert u.cache_write_1h_tokens <= u.cache_write_tokens


async def test_explicit_cache_usage_lands_on_the_ledger(tmp_path: Path) -> None:
    # The flag has no ledger column: the row keeps the token split and the cost priced with it.
    usage, _ = openai_pair(
        {
            "prompt_tokens": 1634,
            "completion_tokens": 50,
            "prompt_tokens_details": {"cached_tokens": 1605, "cache_type": "ephemeral"},
        }
    )
    cost = book(**QWEN).cost("p", "m", usage)
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = open_ledger(url)
    await ledger.start()
    attempt = AttemptRow(
        request_id="r",
        seq=0,
        ts=1.0,
        provider="p",
        provider_model="m",
        status=200,
        flag="OK",
        usage=usage,
        cost_usd=cost,
        latency_ms=1.0,
        ttft_ms=None,
        error=None,
    )
    ledger.record(
        RequestRow(
            request_id="r",
            ts=1.0,
            key="app",
            model="qwen",
            provider="p",
            provider_model="m",
            api="openai.chat",
            stream=False,
            status=200,
            flag="OK",
            usage=usage,
            cost_usd=cost,
            revenue_usd=cost,
            ttft_ms=None,
            latency_ms=1.0,
            attempts=[attempt],
        )
    )
    await ledger.close()
    (row,) = read_requests(url)
    assert (row["input_tokens"], row["cache_read_tokens"]) == (1634, 1605)
    assert row["cost_usd"] == D("0.0001358")

"""Config price variants: prompt-length tiers, time-of-day windows, mode and service-tier
multipliers, explicit cache reads, and how each meets the catalog's own variants."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokenway.accounting.prices import Price, PriceBook, PriceTier, usage_cost
from tokenway.config.schema import PriceConfig, PriceTierConfig, PriceWindowConfig
from tokenway.domain.types import Usage

D = Decimal
M = 1_000_000
DAY = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
MTOK = Usage(input_tokens=M, output_tokens=M)


def entry(**fields: Any) -> PriceConfig:
    return msgspec.convert({"provider": "p", "model": "m", **fields}, PriceConfig)


def book(**fields: Any) -> PriceBook:
    return PriceBook([entry(**fields)])


# ---- multipliers -----------------------------------------------------------------------------


def test_mode_and_tier_multipliers_compound() -> None:
    pb = book(input=1, output=3, multipliers={"batch": 0.5, "async": 0.8, "flex": 0.5})
    assert pb.cost("p", "m", MTOK, DAY) == 4
    assert pb.cost("p", "m", MTOK, DAY, mode="async") == D("3.2")
    flex = Usage(input_tokens=M, output_tokens=M, service_tier="flex")
    assert pb.cost("p", "m", flex, DAY, mode="batch") == 1


def test_tier_names_are_matched_without_case() -> None:
    pb = book(input=1, output=1, multipliers={"Priority": 2})
    for reported in ("priority", "PRIORITY"):
        usage = Usage(input_tokens=M, service_tier=reported)
        assert pb.cost("p", "m", usage, DAY) == 2
    assert pb.cost("p", "m", Usage(input_tokens=M, service_tier="STANDARD"), DAY) == 1


def test_a_tier_reported_as_batch_is_the_batch_mode_counted_once() -> None:
    # Anthropic reports `service_tier: "batch"` in the usage of a batch request.
    pb = book(input=1, output=1, multipliers={"batch": 0.5})
    as_batch = Usage(input_tokens=M, service_tier="batch")
    assert pb.cost("p", "m", as_batch, DAY) == D("0.5")
    assert pb.cost("p", "m", as_batch, DAY, mode="batch") == D("0.5")
    catalog = PriceBook([])
    haiku = Usage(input_tokens=M, output_tokens=M)
    assert catalog.cost("anthropic", "claude-haiku-4-5", haiku, DAY) == 6
    served_batch = msgspec.structs.replace(haiku, service_tier="batch")
    assert catalog.cost("anthropic", "claude-haiku-4-5", served_batch, DAY) == 3


def test_config_multiplier_replaces_the_catalog_variant_of_that_tier_only() -> None:
    pb = PriceBook([PriceConfig(provider="openai", model="gpt-5-mini", multipliers={"flex": 0.4})])
    flex = Usage(input_tokens=M, output_tokens=M, service_tier="flex")
    priority = msgspec.structs.replace(flex, service_tier="priority")
    # standard 0.25 + 2; flex by the config: x0.4 of standard, not the catalog's 0.125 + 1
    assert pb.cost("openai", "gpt-5-mini", flex, DAY) == D("0.9")
    # priority is left to the catalog: 0.45 + 3.6
    assert pb.cost("openai", "gpt-5-mini", priority, DAY) == D("4.05")


def test_entries_without_variants_keep_todays_behaviour() -> None:
    # A field the entry sets wins over a catalog variant of that field, as before.
    pb = PriceBook([PriceConfig(provider="openai", model="gpt-5-mini", input=0.3)])
    batch = pb.price("openai", "gpt-5-mini", DAY, batch=True)
    assert batch is not None and (batch.input, batch.output) == (D("0.3"), D(1))


def test_multipliers_follow_the_effective_dated_entry() -> None:
    pb = PriceBook(
        [
            entry(input=1, multipliers={"batch": 0.5}),
            entry(input=1, effective_from="2026-12-01"),
        ]
    )
    batch = Usage(input_tokens=M)
    assert pb.cost("p", "m", batch, DAY, mode="batch") == D("0.5")
    assert pb.cost("p", "m", batch, DAY + timedelta(days=10), mode="batch") == 1


# ---- time-of-day windows ---------------------------------------------------------------------


def test_first_matching_window_wins_and_times_are_utc() -> None:
    pb = book(
        input=1,
        windows=[
            {"start": "00:00", "end": "08:00", "multiplier": 0.5},
            {"start": "06:00", "end": "09:00", "multiplier": 2},
        ],
    )
    usage = Usage(input_tokens=M)
    assert pb.cost("p", "m", usage, datetime(2026, 11, 28, 7, 0, tzinfo=UTC)) == D("0.5")
    assert pb.cost("p", "m", usage, datetime(2026, 11, 28, 8, 0, tzinfo=UTC)) == 2
    assert pb.cost("p", "m", usage, datetime(2026, 11, 28, 9, 0, tzinfo=UTC)) == 1
    # 09:30 at UTC+8 is 01:30 UTC; a naive time is taken as UTC
    beijing = timezone(timedelta(hours=8))
    assert pb.cost("p", "m", usage, datetime(2026, 11, 28, 9, 30, tzinfo=beijing)) == D("0.5")
    assert pb.cost("p", "m", usage, datetime(2026, 11, 28, 9, 30)) == 1


def test_window_multiplies_tiers_and_explicit_reads_too() -> None:
    pb = book(
        input=1,
        cache_read=0.2,
        cache_read_explicit=0.1,
        tiers=[{"above_input_tokens": 10, "input": 2}],
        windows=[{"start": "22:00", "end": "02:00", "multiplier": 0.5}],
    )
    night = pb.price("p", "m", datetime(2026, 11, 28, 23, 0, tzinfo=UTC))
    assert night is not None
    assert (night.input, night.cache_read, night.cache_read_explicit) == (
        D("0.5"),
        D("0.1"),
        D("0.05"),
    )
    assert night.tiers[0].input == 1 and night.tiers[0].cache_read_explicit == D("0.05")


# ---- prompt-length tiers ---------------------------------------------------------------------


def test_config_tiers_replace_the_catalogs_and_empty_tiers_remove_them() -> None:
    usage = Usage(input_tokens=300_000, output_tokens=1_000)
    own = PriceBook(
        [
            PriceConfig(
                provider="anthropic",
                model="claude-sonnet-4-5",
                tiers=[PriceTierConfig(above_input_tokens=250_000, input=5)],
            )
        ]
    )
    assert own.cost("anthropic", "claude-sonnet-4-5", usage) == D("1.515")  # 300k*5 + 1k*15
    flat = PriceBook([PriceConfig(provider="anthropic", model="claude-sonnet-4-5", tiers=[])])
    assert flat.cost("anthropic", "claude-sonnet-4-5", usage) == D("0.915")  # 300k*3 + 1k*15
    catalog = PriceBook([])
    assert catalog.cost("anthropic", "claude-sonnet-4-5", usage) == D("1.8225")  # 300k*6 + 22.5


def test_tiers_are_sorted_and_omitted_fields_take_the_base() -> None:
    pb = book(
        input=1,
        output=2,
        cache_write=1.25,
        tiers=[
            {"above_input_tokens": 2000, "input": 4, "cache_write": 5},
            {"above_input_tokens": 1000, "input": 2},
        ],
    )
    p = pb.price("p", "m")
    assert p is not None
    assert [t.above_input_tokens for t in p.tiers] == [1000, 2000]
    assert (p.tiers[0].output, p.tiers[0].cache_write) == (2, D("1.25"))
    assert p.for_prompt(1500).input == 2 and p.for_prompt(2001).cache_write == 5


def test_tier_prices_convert_at_the_entrys_currency() -> None:
    pb = PriceBook(
        [entry(input=7.2, currency="CNY", tiers=[{"above_input_tokens": 5, "input": 14.4}])],
        fx={"CNY": 7.2},
    )
    p = pb.price("p", "m")
    assert p is not None and p.input == 1 and p.tiers[0].input == 2


# ---- explicit cache reads --------------------------------------------------------------------


def test_explicit_reads_use_their_price_and_fall_back_to_cache_read() -> None:
    reads = Usage(input_tokens=M, cache_read_tokens=M, cache_explicit=True)
    assert book(input=1, cache_read=0.2, cache_read_explicit=0.1).cost("p", "m", reads) == D("0.1")
    assert book(input=1, cache_read=0.2).cost("p", "m", reads) == D("0.2")
    implicit = msgspec.structs.replace(reads, cache_explicit=False)
    assert book(input=1, cache_read=0.2, cache_read_explicit=0.1).cost("p", "m", implicit) == D(
        "0.2"
    )


# ---- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields,message",
    [
        ({"windows": [{"start": "25:00", "end": "01:00", "multiplier": 1}]}, "start: expected"),
        ({"windows": [{"start": "7:30", "end": "08:00", "multiplier": 1}]}, "'7:30'"),
        ({"windows": [{"start": "08:00", "end": "08:00", "multiplier": 1}]}, "empty"),
        ({"windows": [{"start": "08:00", "end": "09:00", "multiplier": -1}]}, "multiplier"),
        ({"multipliers": {"batch": -0.5}}, "multipliers.batch: must be a non-negative"),
        ({"multipliers": {"flex": float("nan")}}, "multipliers.flex"),
        ({"multipliers": {"default": 0.9}}, "multipliers.default: 'default' is the base"),
        ({"tiers": [{"above_input_tokens": -1}]}, "above_input_tokens"),
        ({"tiers": [{"above_input_tokens": 5, "output": -2}]}, "output: must be"),
        (
            {"tiers": [{"above_input_tokens": 5}, {"above_input_tokens": 5}]},
            "same above_input_tokens",
        ),
        ({"cache_read_explicit": -0.1}, "cache_read_explicit: must be"),
    ],
)
def test_bad_variants_are_refused_with_the_field_named(
    fields: dict[str, Any], message: str
) -> None:
    with pytest.raises((ValueError, msgspec.ValidationError), match=message):
        entry(input=1, **fields)


def test_a_direct_bad_window_is_a_value_error() -> None:
    with pytest.raises(ValueError, match=r"end: expected a UTC time of day HH:MM, got '24:00'"):
        PriceWindowConfig(start="23:00", end="24:00", multiplier=0.5)


# ---- invariants ------------------------------------------------------------------------------

_prices = st.decimals(min_value=0, max_value=100, places=4)
_factor = st.decimals(min_value=0, max_value=5, places=3)


@st.composite
def priced(draw: st.DrawFn) -> Price:
    fields = {f: draw(_prices) for f in Price.__struct_fields__[:5]}
    tiers = tuple(
        PriceTier(above_input_tokens=draw(st.integers(0, 10**6)), **fields)
        for _ in range(draw(st.integers(0, 2)))
    )
    return Price(**fields, tiers=tiers, cache_read_explicit=draw(st.none() | _prices))


@given(priced(), _factor, st.integers(0, 10**7), st.integers(0, 10**7), st.booleans())
def test_scaling_a_price_scales_the_cost_exactly(
    price: Price, factor: Decimal, prompt: int, out: int, explicit: bool
) -> None:
    usage = Usage(
        input_tokens=prompt,
        cache_read_tokens=prompt // 2,
        output_tokens=out,
        cache_explicit=explicit,
    )
    assert usage_cost(price.scaled(factor), usage) == usage_cost(price, usage) * factor

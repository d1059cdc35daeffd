"""The price book: catalog lookup, config overrides, history, currencies and cost invariants."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokenway.accounting.prices import Price, PriceBook, PriceTier, usage_cost
from tokenway.config.schema import PriceConfig
from tokenway.domain.types import Usage

D = Decimal
M = 1_000_000


@pytest.fixture(scope="module")
def catalog() -> PriceBook:
    return PriceBook([])


def test_catalog_price_by_provider_id(catalog: PriceBook) -> None:
    p = catalog.price("openai", "gpt-4o-mini")
    assert p is not None
    assert (p.input, p.output, p.cache_read) == (D("0.15"), D("0.6"), D("0.075"))
    # OpenAI lists no cache-write price: no discount assumed, so it costs like input.
    assert p.cache_write == p.cache_write_1h == D("0.15")


def test_free_form_provider_name_searches_all_catalog_providers(catalog: PriceBook) -> None:
    assert catalog.price("my-deepseek", "deepseek-chat", datetime(2026, 6, 1, 3, tzinfo=UTC))
    assert catalog.price("gpu-1", "llama-3.1-8b-instant") is not None


def test_unknown_model_has_no_price_and_costs_nothing(catalog: PriceBook) -> None:
    assert catalog.price("gpu-1", "my-own-finetune-v7") is None
    usage = Usage(input_tokens=1000, output_tokens=1000)
    assert catalog.cost("gpu-1", "my-own-finetune-v7", usage) == 0


def test_anthropic_cache_split_golden(catalog: PriceBook) -> None:
    # claude-sonnet-4-5: input 3, 5m write 3.75, 1h write 6, read 0.30, output 15 per 1M.
    usage = Usage(
        input_tokens=10_000,
        cache_read_tokens=4_000,
        cache_write_tokens=3_000,
        cache_write_1h_tokens=1_000,
        output_tokens=500,
    )
    expected = (
        3_000 * D(3) + 4_000 * D("0.3") + 2_000 * D("3.75") + 1_000 * D(6) + 500 * D(15)
    ) / M
    assert catalog.cost("anthropic", "claude-sonnet-4-5", usage) == expected == D("0.0312")


def test_long_prompt_tier_applies_to_whole_request(catalog: PriceBook) -> None:
    usage = Usage(input_tokens=300_000, cache_read_tokens=100_000, output_tokens=1_000)
    # Over 200k prompt tokens every price doubles (output x1.5): 200k*6 + 100k*0.6 + 1k*22.5.
    assert catalog.cost("anthropic", "claude-sonnet-4-5", usage) == D("1.2825")
    at_edge = Usage(input_tokens=200_000, output_tokens=1_000)
    assert catalog.cost("anthropic", "claude-sonnet-4-5", at_edge) == D("0.615")


def test_time_of_day_discount_from_catalog(catalog: PriceBook) -> None:
    peak = catalog.price("deepseek", "deepseek-chat", datetime(2026, 6, 1, 3, tzinfo=UTC))
    off_peak = catalog.price("deepseek", "deepseek-chat", datetime(2026, 6, 1, 18, tzinfo=UTC))
    assert peak is not None and off_peak is not None
    assert off_peak.input == peak.input / 2


def test_service_tier_and_batch_variants(catalog: PriceBook) -> None:
    usage = Usage(input_tokens=M, output_tokens=M)
    day = datetime(2026, 10, 14, tzinfo=UTC)
    standard = catalog.cost("openai", "o3", usage, day)
    flex = catalog.cost(
        "openai", "o3", Usage(input_tokens=M, output_tokens=M, service_tier="flex"), day
    )
    assert standard == 10
    assert flex == 5
    assert catalog.cost("openai", "o3", usage, day, batch=True) == 5


def test_override_takes_missing_fields_from_catalog() -> None:
    book = PriceBook([PriceConfig(provider="openai", model="gpt-4o-mini", input=0.2, output=0.8)])
    p = book.price("openai", "gpt-4o-mini")
    assert p is not None
    assert (p.input, p.output, p.cache_read) == (D("0.2"), D("0.8"), D("0.075"))
    # the catalog has no write price, so the override's input is used, not the catalog's
    assert p.cache_write == D("0.2")


def test_override_is_keyed_by_our_provider_name() -> None:
    book = PriceBook([PriceConfig(provider="my-azure", model="gpt-4o-mini", input=1.0)])
    p_azure, p_openai = book.price("my-azure", "gpt-4o-mini"), book.price("openai", "gpt-4o-mini")
    assert p_azure is not None and p_openai is not None
    assert p_azure.input == 1 and p_openai.input == D("0.15")


def test_override_on_tiered_model_flattens_only_overridden_fields() -> None:
    book = PriceBook([PriceConfig(provider="anthropic", model="claude-sonnet-4-5", input=2.0)])
    p = book.price("anthropic", "claude-sonnet-4-5")
    assert p is not None and p.tiers
    long = p.for_prompt(300_000)
    assert long.input == 2 and long.output == D("22.5")


def test_unknown_model_override_fills_from_input() -> None:
    book = PriceBook(
        [
            PriceConfig(provider="gpu", model="mine", input=0.1),
            PriceConfig(provider="gpu", model="mine-cached", input=0.1, cache_write=0.3),
        ]
    )
    assert book.price("gpu", "mine") == Price(
        input=D("0.1"),
        output=D("0.1"),
        cache_read=D("0.1"),
        cache_write=D("0.1"),
        cache_write_1h=D("0.1"),
    )
    cached = book.price("gpu", "mine-cached")
    assert cached is not None and cached.cache_write_1h == D("0.3")


def test_unknown_model_override_needs_input() -> None:
    with pytest.raises(ValueError, match=r"prices\[0\].*'input' is required"):
        PriceBook([PriceConfig(provider="gpu", model="mine", output=1.0)])


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf")])
def test_negative_or_non_finite_prices_are_rejected(bad: float) -> None:
    with pytest.raises(ValueError, match=r"prices\[0\].*output must be a non-negative"):
        PriceBook([PriceConfig(provider="gpu", model="m", input=1.0, output=bad)])


def test_float_config_values_become_exact_decimals() -> None:
    book = PriceBook([PriceConfig(provider="gpu", model="mine", input=0.1, output=0.3)])
    usage = Usage(input_tokens=3, output_tokens=1)
    assert book.cost("gpu", "mine", usage) == D("0.0000006")


def test_effective_from_keeps_history() -> None:
    book = PriceBook(
        [
            PriceConfig(
                provider="gpu", model="m", input=2.0, effective_from="2026-03-01T12:00:00Z"
            ),
            PriceConfig(provider="gpu", model="m", input=1.0, effective_from="2026-01-01"),
        ]
    )
    assert book.price("gpu", "m", datetime(2025, 12, 31, 23, 59, tzinfo=UTC)) is None
    jan = book.price("gpu", "m", datetime(2026, 1, 1, tzinfo=UTC))
    before_noon = book.price("gpu", "m", datetime(2026, 3, 1, 11, 59))  # naive = UTC
    after_noon = book.price("gpu", "m", datetime(2026, 3, 1, 12, 0, tzinfo=UTC))
    assert jan is not None and before_noon is not None and after_noon is not None
    assert (jan.input, before_noon.input, after_noon.input) == (1, 1, 2)


def test_dated_override_falls_back_to_catalog_before_it_applies() -> None:
    book = PriceBook(
        [
            PriceConfig(
                provider="openai", model="gpt-4o-mini", input=9.0, effective_from="2030-01-01"
            )
        ]
    )
    now = book.price("openai", "gpt-4o-mini", datetime(2026, 1, 1, tzinfo=UTC))
    later = book.price("openai", "gpt-4o-mini", datetime(2030, 1, 2, tzinfo=UTC))
    assert now is not None and later is not None
    assert (now.input, later.input) == (D("0.15"), 9)


def test_bad_effective_from_names_the_entry() -> None:
    with pytest.raises(ValueError, match=r"prices\[0\].*effective_from"):
        PriceBook([PriceConfig(provider="gpu", model="m", input=1.0, effective_from="soon")])


def test_currency_conversion_default_and_given_rates() -> None:
    entry = PriceConfig(provider="ds", model="m", input=7.1, output=14.2, currency="CNY")
    p = PriceBook([entry]).price("ds", "m")
    assert p is not None and (p.input, p.output) == (1, 2)
    eur = PriceConfig(provider="x", model="m", input=0.9, currency="eur")
    p2 = PriceBook([eur], fx={"EUR": D("0.9")}).price("x", "m")
    assert p2 is not None and p2.input == 1
    with pytest.raises(ValueError, match="currency 'EUR'"):
        PriceBook([PriceConfig(provider="x", model="m", input=1.0, currency="EUR")])


# ---- cost invariants -----------------------------------------------------------------------

prices = st.decimals(min_value=0, max_value=100, places=4)
counts = st.integers(min_value=0, max_value=5_000_000)


@st.composite
def flat_prices(draw: st.DrawFn) -> Price:
    return Price(
        input=draw(prices),
        output=draw(prices),
        cache_read=draw(prices),
        cache_write=draw(prices),
        cache_write_1h=draw(prices),
    )


@st.composite
def tiered_prices(draw: st.DrawFn) -> Price:
    """Tiers never cheaper than the level below, as providers price them."""
    base = draw(flat_prices())
    tiers = []
    level = base
    for start in sorted(draw(st.sets(st.integers(1, 2_000_000), max_size=3))):
        bump = {f: getattr(level, f) + draw(prices) for f in Price.__struct_fields__[:5]}
        tiers.append(PriceTier(above_input_tokens=start, **bump))
        level = Price(**bump)
    return Price(**{f: getattr(base, f) for f in Price.__struct_fields__[:5]}, tiers=tuple(tiers))


def _usage(uncached: int, read: int, w5: int, w1h: int, out: int) -> Usage:
    return Usage(
        input_tokens=uncached + read + w5 + w1h,
        cache_read_tokens=read,
        cache_write_tokens=w5 + w1h,
        cache_write_1h_tokens=w1h,
        output_tokens=out,
    )


@given(tiered_prices(), st.lists(counts, min_size=5, max_size=5), st.integers(0, 4), counts)
def test_cost_is_monotone_in_each_token_count(
    price: Price, parts: list[int], which: int, extra: int
) -> None:
    more = list(parts)
    more[which] += extra
    assert usage_cost(price, _usage(*more)) >= usage_cost(price, _usage(*parts)) >= 0


@given(flat_prices(), st.lists(counts, min_size=5, max_size=5))
def test_cost_is_the_exact_decimal_sum(price: Price, parts: list[int]) -> None:
    uncached, read, w5, w1h, out = parts
    expected = (
        uncached * price.input
        + read * price.cache_read
        + w5 * price.cache_write
        + w1h * price.cache_write_1h
        + out * price.output
    ) / M
    assert usage_cost(price, _usage(*parts)) == expected


@given(
    flat_prices(),
    st.lists(counts, min_size=5, max_size=5),
    st.lists(counts, min_size=5, max_size=5),
)
def test_cost_is_additive_without_tiers(price: Price, a: list[int], b: list[int]) -> None:
    both = [x + y for x, y in zip(a, b, strict=True)]
    assert usage_cost(price, _usage(*both)) == usage_cost(price, _usage(*a)) + usage_cost(
        price, _usage(*b)
    )


@given(
    flat_prices(),
    st.integers(-1000, 10_000),
    st.integers(-1000, 10_000),
    st.integers(-1000, 10_000),
    st.integers(-1000, 10_000),
    st.integers(-1000, 10_000),
)
def test_inconsistent_usage_never_costs_negative(
    price: Price, inp: int, read: int, write: int, w1h: int, out: int
) -> None:
    usage = Usage(
        input_tokens=inp,
        cache_read_tokens=read,
        cache_write_tokens=write,
        cache_write_1h_tokens=w1h,
        output_tokens=out,
    )
    assert usage_cost(price, usage) >= 0

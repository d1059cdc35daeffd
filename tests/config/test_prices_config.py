"""The `prices` and `fx` sections of the config: variants parse, bad ones are refused with
their path named, and the rates reach the price book the gateway uses."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tokenway.accounting.prices import PriceBook
from tokenway.config.load import ConfigError, load_config, parse_config
from tokenway.domain.types import Usage
from tokenway.runtime import Runtime

D = Decimal


def doc(*prices: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {
        "providers": [
            {"name": "qwen", "kind": "openai", "base_url": "https://dashscope.aliyuncs.com/v1"}
        ],
        "prices": list(prices),
        **top,
    }


QWEN = {
    "provider": "qwen",
    "model": "qwen-plus",
    "input": 7.2,
    "output": 28.8,
    "cache_read": 1.44,
    "cache_read_explicit": 0.72,
    "cache_write": 9,
    "currency": "CNY",
    "tiers": [{"above_input_tokens": 128000, "input": 14.4}],
    "windows": [{"start": "16:30", "end": "00:30", "multiplier": 0.5}],
    "multipliers": {"batch": 0.5},
}


def test_price_variants_and_fx_parse() -> None:
    config = parse_config(doc(QWEN, fx={"CNY": 7.2}), env={})
    entry = config.raw.prices[0]
    assert config.raw.fx == {"CNY": 7.2}
    assert entry.tiers is not None and entry.tiers[0].above_input_tokens == 128000
    assert (entry.windows[0].start, entry.windows[0].end) == ("16:30", "00:30")
    assert entry.multipliers == {"batch": 0.5}


def test_fx_from_the_config_reaches_the_runtime_price_book(tmp_path: Path) -> None:
    storage = {"ledger": f"sqlite:///{tmp_path}/ledger.db"}
    config = parse_config(doc(QWEN, fx={"CNY": 7.2}, storage=storage), env={})
    noon = datetime(2026, 3, 2, 12, tzinfo=UTC)  # outside the off-peak window
    price = Runtime(config).prices.price("qwen", "qwen-plus", noon)
    assert price is not None
    assert (price.input, price.cache_read, price.cache_read_explicit, price.cache_write) == (
        1,
        D("0.2"),
        D("0.1"),
        D("1.25"),
    )
    # without `fx` the built-in rate (7.1) applies
    default = PriceBook(parse_config(doc(QWEN), env={}).raw.prices)
    other = default.price("qwen", "qwen-plus", noon)
    assert other is not None and other.input == D("7.2") / D("7.1")


def test_yaml_file_with_variants_loads(tmp_path: Path) -> None:
    path = tmp_path / "tokenway.yaml"
    path.write_text(
        """
providers:
  - {name: qwen, kind: openai, base_url: "https://dashscope.aliyuncs.com/v1"}
fx: {CNY: 7.2}
prices:
  - provider: qwen
    model: qwen-plus
    input: 0.72
    currency: CNY
    windows: [{start: "16:30", end: "00:30", multiplier: 0.5}]
    multipliers: {batch: 0.5, flex: 0.5, priority: 1.75}
    tiers: [{above_input_tokens: 200000, input: 2.16}]
""",
        encoding="utf-8",
    )
    config = load_config(path)
    book = PriceBook(config.raw.prices, fx=config.raw.fx)
    usage = Usage(input_tokens=100_000, service_tier="priority")
    noon, evening = datetime(2026, 11, 28, 12, tzinfo=UTC), datetime(2026, 11, 28, 20, tzinfo=UTC)
    # 0.72 CNY is 0.1 USD; priority x1.75; from 16:30 UTC x0.5
    assert book.cost("qwen", "qwen-plus", usage, noon) == D("0.0175")
    assert book.cost("qwen", "qwen-plus", usage, evening) == D("0.00875")
    long = Usage(input_tokens=300_000)
    assert book.cost("qwen", "qwen-plus", long, noon, mode="batch") == D("0.045")  # 0.3 x0.5


@pytest.mark.parametrize(
    "change,message",
    [
        (
            {"windows": [{"start": "25:00", "end": "00:30", "multiplier": 0.5}]},
            "prices[0].windows[0]: start: expected a UTC time of day HH:MM, got '25:00'",
        ),
        (
            {"windows": [{"start": "16:30", "end": "16:30", "multiplier": 0.5}]},
            "prices[0].windows[0]: end: equals start",
        ),
        (
            {"windows": [{"start": "16:30", "end": "00:30", "multiplier": -1}]},
            "prices[0].windows[0]: multiplier: must be a non-negative number",
        ),
        (
            {"windows": [{"start": "16:30", "end": "00:30"}]},
            "prices[0].windows[0]: Object missing required field `multiplier`",
        ),
        (
            {"multipliers": {"flex": -0.5}},
            "prices[0]: multipliers.flex: must be a non-negative number",
        ),
        ({"multipliers": {"standard": 1.1}}, "prices[0]: multipliers.standard:"),
        ({"multipliers": {"batch": "half"}}, "prices[0].multipliers[...]: Expected `float`"),
        (
            {"tiers": [{"above_input_tokens": 1000, "input": -1}]},
            "prices[0].tiers[0]: input: must be a non-negative number",
        ),
        ({"tiers": [{"above_input_tokens": 1000, "colour": 1}]}, "prices[0].tiers[0].colour"),
        ({"tiers": [{"input": 1}]}, "prices[0].tiers[0]: Object missing required field"),
        ({"cache_read_explicit": -1}, "prices[0]: cache_read_explicit: must be"),
    ],
)
def test_bad_price_variants_name_their_path(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(doc({**QWEN, **change}), env={})
    assert message in str(err.value)


@pytest.mark.parametrize("rate", [0, -7.2, float("inf"), float("nan")])
def test_fx_rates_must_be_positive(rate: float) -> None:
    with pytest.raises(ConfigError, match=r"^fx\.CNY: must be a positive number"):
        parse_config(doc(fx={"CNY": rate}), env={})


def test_fx_rate_must_be_a_number() -> None:
    # msgspec names a map's entry as `[...]`
    with pytest.raises(ConfigError, match=r"^fx\[\.\.\.\]: Expected `float`"):
        parse_config(doc(fx={"CNY": "seven"}), env={})

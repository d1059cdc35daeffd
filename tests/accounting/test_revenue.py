from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokenway.accounting.prices import PriceBook
from tokenway.accounting.revenue import Plans
from tokenway.config.load import ConfigError, parse_config
from tokenway.config.schema import PlanConfig, PlanPrice, PriceConfig
from tokenway.domain.types import Usage

D = Decimal
PRICES = PriceBook([PriceConfig(provider="p", model="m", input=1.0, cache_read=0.1, output=2.0)])
U = Usage(input_tokens=1_000_000, cache_read_tokens=600_000, output_tokens=100_000)
COST = PRICES.cost("p", "m", U)  # 0.4 + 0.06 + 0.2


def plans(**kw: object) -> Plans:
    return Plans({"x": PlanConfig(name="x", **kw)}, PRICES)  # type: ignore[arg-type]


def test_no_plan_charges_the_upstream_cost() -> None:
    assert plans().revenue(None, "chat", "p", "m", U, COST) == COST == D("0.66")


def test_markup_passing_the_cache_discount() -> None:
    assert plans(markup=0.25).revenue("x", "chat", "p", "m", U, COST) == D("0.825")


def test_markup_keeping_the_cache_discount() -> None:
    # cached reads billed at the input price: 1.0 + 0.2, then the markup
    got = plans(markup=0.25, pass_cache_discount=False).revenue("x", "chat", "p", "m", U, COST)
    assert got == D("1.5")


def test_price_sheet_for_the_client_model() -> None:
    sheet = [PlanPrice(model="chat", input=3.0, output=6.0, cache_read=1.5)]
    got = plans(prices=sheet).revenue("x", "chat", "p", "m", U, COST)
    assert got == D("1.2") + D("0.9") + D("0.6")
    other = plans(prices=sheet, markup=1.0).revenue("x", "other", "p", "m", U, COST)
    assert other == COST * 2


@given(
    st.integers(0, 10**7),
    st.integers(0, 10**7),
    st.integers(0, 10**6),
    st.decimals(0, 5, places=2),
)
def test_keeping_the_discount_never_charges_less(
    prompt: int, cached: int, output: int, markup: Decimal
) -> None:
    u = Usage(input_tokens=prompt, cache_read_tokens=min(cached, prompt), output_tokens=output)
    cost = PRICES.cost("p", "m", u)
    passed = plans(markup=float(markup)).revenue("x", "c", "p", "m", u, cost)
    kept = plans(markup=float(markup), pass_cache_discount=False).revenue(
        "x", "c", "p", "m", u, cost
    )
    assert kept >= passed >= 0


def test_unknown_plan_is_a_config_error() -> None:
    doc = {"keys": [{"name": "a", "key": "sk-a", "plan": "gold"}]}
    with pytest.raises(ConfigError, match=r"keys\[0\].plan: unknown plan 'gold'"):
        parse_config(doc, env={})

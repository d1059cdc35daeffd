"""What a client is charged, from its key's price plan (see `config.schema.PlanConfig`).

Revenue is charged only for what the client received: the served attempt's usage, never the
failed or hedged attempts the operator paid for.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import msgspec

from tokenway.accounting.prices import Price, PriceBook, usage_cost
from tokenway.config.schema import PlanConfig
from tokenway.domain.types import Usage


def _d(x: float | None, fallback: Decimal) -> Decimal:
    return fallback if x is None else Decimal(str(x))


class Plans:
    """Price plans by name, applied to served usage."""

    def __init__(self, plans: dict[str, PlanConfig], prices: PriceBook) -> None:
        self._prices = prices
        self._markup: dict[str, Decimal] = {}
        self._pass: dict[str, bool] = {}
        self._sheets: dict[tuple[str, str], Price] = {}
        for name, plan in plans.items():
            self._markup[name] = Decimal(1) + Decimal(str(plan.markup))
            self._pass[name] = plan.pass_cache_discount
            for line in plan.prices:
                inp = Decimal(str(line.input))
                read = _d(line.cache_read, inp) if plan.pass_cache_discount else inp
                write = _d(line.cache_write, inp)
                self._sheets[(name, line.model)] = Price(
                    input=inp,
                    output=Decimal(str(line.output)),
                    cache_read=read,
                    cache_write=write,
                    cache_write_1h=write,
                )

    def revenue(
        self,
        plan: str | None,
        model: str,
        provider: str,
        provider_model: str,
        usage: Usage,
        served_cost: Decimal,
        at: datetime | None = None,
    ) -> Decimal:
        """The charge for `usage` served for client model `model` under `plan`."""
        if plan is None or plan not in self._markup:
            return served_cost
        sheet = self._sheets.get((plan, model))
        if sheet is not None:
            return usage_cost(sheet, usage)
        if self._pass[plan]:
            return served_cost * self._markup[plan]
        # the cache discount stays with the operator: bill cached reads as fresh prompt
        uncached = msgspec.structs.replace(usage, cache_read_tokens=0)
        return self._prices.cost(provider, provider_model, uncached, at) * self._markup[plan]

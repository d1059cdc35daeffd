"""The price book: what one upstream call costs, in exact Decimal USD.

Prices come from two places:

- the built-in catalog, the data snapshot bundled with the `genai-prices` package (read offline,
  never refreshed from the network), which knows effective dates, time-of-day discounts,
  prompt-length tiers and service-tier variants;
- `prices` entries of the config, which override the catalog field by field and may be
  effective-dated (`effective_from`), so a price change keeps its history.

A config entry that omits a field takes it from the catalog when the catalog knows the model,
else from `input` (no discount is assumed). Missing cache prices fall back in the chain
`cache_write_1h` → `cache_write` → `input` and `cache_read` → `input`; a missing `output`
falls back to `input`.

Currencies: `fx` maps a currency code to its units per one US dollar (`{"CNY": Decimal("7.1")}`
means 7.1 CNY buy one USD); a price in currency C is divided by `fx[C]`. Built-in defaults are
in `DEFAULT_FX` (USD 1, CNY 7.1) and entries of `fx` replace them. A currency with no rate is a
configuration error (`ValueError` when the book is built). Division happens in the default
Decimal context (28 significant digits); no other rounding ever happens.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import msgspec
from genai_prices import data_snapshot
from genai_prices import types as gp

from tokenway.config.schema import PriceConfig
from tokenway.domain.types import Usage

__all__ = ["DEFAULT_FX", "Price", "PriceBook", "PriceTier", "usage_cost"]

DEFAULT_FX: Mapping[str, Decimal] = {"USD": Decimal(1), "CNY": Decimal("7.1")}

_MTOK = Decimal(1_000_000)
_ZERO = Decimal(0)
_FIELDS = ("input", "output", "cache_read", "cache_write", "cache_write_1h")
_CATALOG_KEYS = {
    "input": "input_mtok",
    "output": "output_mtok",
    "cache_read": "cache_read_mtok",
    "cache_write": "cache_write_mtok",
    "cache_write_1h": "cache_write_1h_mtok",
}


class PriceTier(msgspec.Struct, frozen=True, kw_only=True):
    """Prices that replace the base ones when a prompt has more than `above_input_tokens`."""

    above_input_tokens: int
    input: Decimal
    output: Decimal
    cache_read: Decimal
    cache_write: Decimal
    cache_write_1h: Decimal


class Price(msgspec.Struct, frozen=True, kw_only=True):
    """Decimal USD per 1M tokens. `cache_write` is the 5-minute TTL write price.

    `tiers`, ascending by threshold, hold prompt-length prices (a long prompt may cost more per
    token for the whole request); `for_prompt` picks the applicable one.
    """

    input: Decimal
    output: Decimal
    cache_read: Decimal
    cache_write: Decimal
    cache_write_1h: Decimal
    tiers: tuple[PriceTier, ...] = ()

    def for_prompt(self, input_tokens: int) -> Price:
        """The flat price that applies to a request whose prompt has `input_tokens` tokens."""
        chosen: PriceTier | None = None
        for tier in self.tiers:
            if input_tokens > tier.above_input_tokens:
                chosen = tier
        if chosen is None:
            return self if not self.tiers else msgspec.structs.replace(self, tiers=())
        return Price(**{f: getattr(chosen, f) for f in _FIELDS})


def usage_cost(price: Price, usage: Usage) -> Decimal:
    """Exact cost in USD of `usage` at `price` (tiers applied), never negative.

    uncached input = input - cache_read - cache_write; 5-minute writes = cache_write minus
    one-hour writes; every count is clamped at zero so an inconsistent report cannot produce a
    negative or reduced cost from another field.
    """
    cache_read = max(usage.cache_read_tokens, 0)
    cache_write = max(usage.cache_write_tokens, 0)
    write_1h = max(usage.cache_write_1h_tokens, 0)
    write_5m = max(cache_write - write_1h, 0)
    uncached = max(usage.input_tokens - cache_read - cache_write, 0)
    output = max(usage.output_tokens, 0)
    p = price.for_prompt(max(usage.input_tokens, 0))
    total = (
        uncached * p.input
        + cache_read * p.cache_read
        + write_5m * p.cache_write
        + write_1h * p.cache_write_1h
        + output * p.output
    )
    return max(total / _MTOK, _ZERO)


class _Override(msgspec.Struct, frozen=True):
    since: datetime | None
    fields: dict[str, Decimal]


class PriceBook:
    """Prices by (provider name, model name) at a point in time.

    `provider` is the free-form provider name of our config; the catalog is searched under the
    genai-prices provider of that name when there is one, then across all catalog providers.
    """

    def __init__(
        self, overrides: Iterable[PriceConfig], fx: Mapping[str, Decimal] | None = None
    ) -> None:
        rates = {k.upper(): v for k, v in DEFAULT_FX.items()}
        rates.update({k.upper(): _decimal(v) for k, v in (fx or {}).items()})
        self._snapshot = data_snapshot.get_snapshot()
        self._lookups: dict[tuple[str, str], tuple[gp.Provider, gp.ModelInfo] | None] = {}
        self._overrides: dict[tuple[str, str], list[_Override]] = {}
        for i, entry in enumerate(overrides):
            where = f"prices[{i}] ({entry.provider}/{entry.model})"
            rate = rates.get(entry.currency.upper())
            if rate is None or rate <= 0:
                raise ValueError(f"{where}: no exchange rate for currency {entry.currency!r}")
            fields = {
                f: _decimal(getattr(entry, f)) / rate
                for f in _FIELDS
                if getattr(entry, f) is not None
            }
            for name, value in fields.items():
                if not value.is_finite() or value < 0:
                    raise ValueError(f"{where}: {name} must be a non-negative number")
            known = self._catalog(entry.provider, entry.model, datetime.now(UTC), None, False)
            if "input" not in fields and known is None:
                raise ValueError(
                    f"{where}: 'input' is required because the built-in catalog does not "
                    "know this model"
                )
            since = _parse_effective(entry.effective_from, where)
            self._overrides.setdefault((entry.provider, entry.model), []).append(
                _Override(since, fields)
            )
        for history in self._overrides.values():
            history.sort(key=lambda o: o.since or datetime.min.replace(tzinfo=UTC))

    def price(
        self,
        provider: str,
        model: str,
        at: datetime | None = None,
        *,
        service_tier: str | None = None,
        batch: bool = False,
    ) -> Price | None:
        """The price in force at `at` (default now), or None when neither config nor catalog
        knows the model. `service_tier` (as the provider reported it) and `batch` select the
        catalog's variant prices where it has them."""
        when = _aware(at) if at is not None else datetime.now(UTC)
        catalog = self._catalog(provider, model, when, service_tier, batch)
        override = self._override_at(provider, model, when)
        return _merge(override.fields if override else {}, catalog)

    def cost(
        self,
        provider: str,
        model: str,
        usage: Usage,
        at: datetime | None = None,
        *,
        batch: bool = False,
    ) -> Decimal:
        """Exact USD cost of `usage`; zero when the model has no known price."""
        price = self.price(provider, model, at, service_tier=usage.service_tier, batch=batch)
        if price is None:
            return _ZERO
        return usage_cost(price, usage)

    # ---- internals ----------------------------------------------------------------------

    def _override_at(self, provider: str, model: str, when: datetime) -> _Override | None:
        history = self._overrides.get((provider, model))
        if not history:
            return None
        starts = [o.since or datetime.min.replace(tzinfo=UTC) for o in history]
        i = bisect_right(starts, when)
        return history[i - 1] if i else None

    def _lookup(self, provider: str, model: str) -> tuple[gp.Provider, gp.ModelInfo] | None:
        key = (provider, model)
        if key in self._lookups:
            return self._lookups[key]
        found = self._search(provider, model)
        self._lookups[key] = found
        return found

    def _search(self, provider: str, model: str) -> tuple[gp.Provider, gp.ModelInfo] | None:
        providers = self._snapshot.providers
        named = data_snapshot.find_provider_by_id(providers, provider)
        if named is not None and (info := named.find_model(model, all_providers=providers)):
            return named, info
        try:
            return self._snapshot.find_provider_model(model, None, None, None)
        except LookupError:
            pass
        for candidate in providers:
            if info := candidate.find_model(model):
                return candidate, info
        return None

    def _catalog(
        self, provider: str, model: str, when: datetime, service_tier: str | None, batch: bool
    ) -> _Partial | None:
        found = self._lookup(provider, model)
        if found is None:
            return None
        owner, info = found
        context: dict[str, str] = {}
        # Variants belong to the provider that lists the model, not to a fallback provider.
        if any(m is info for m in owner.models):
            if service_tier:
                context["service_tier"] = service_tier
            if batch:
                context["processing"] = "batch"
        return _from_catalog(info.get_prices(when, context or None))


class _Partial(msgspec.Struct, frozen=True):
    """Catalog prices as listed (fields may be missing), base and per prompt-length tier."""

    base: dict[str, Decimal]
    tiers: tuple[tuple[int, dict[str, Decimal]], ...]


def _from_catalog(mp: gp.ModelPrice) -> _Partial | None:
    raw: dict[str, Any] = {
        f: v for f, key in _CATALOG_KEYS.items() if (v := getattr(mp, key, None)) is not None
    }
    if "input" not in raw:
        return None
    base = {f: (v.base if isinstance(v, gp.TieredPrices) else v) for f, v in raw.items()}
    starts = sorted(
        {t.start for v in raw.values() if isinstance(v, gp.TieredPrices) for t in v.tiers}
    )
    tiers = tuple((s, {f: _tier_value(v, s) for f, v in raw.items()}) for s in starts)
    return _Partial(base, tiers)


def _tier_value(value: Decimal | gp.TieredPrices, start: int) -> Decimal:
    if not isinstance(value, gp.TieredPrices):
        return value
    chosen = value.base
    for tier in value.tiers:
        if tier.start <= start:
            chosen = tier.price
    return chosen


def _fill(fields: Mapping[str, Decimal]) -> dict[str, Decimal]:
    """Complete a partial set of prices with the no-discount fallbacks."""
    out = dict(fields)
    out.setdefault("output", out["input"])
    out.setdefault("cache_read", out["input"])
    out.setdefault("cache_write", out["input"])
    out.setdefault("cache_write_1h", out["cache_write"])
    return out


def _merge(fields: Mapping[str, Decimal], catalog: _Partial | None) -> Price | None:
    """Override `fields` on top of the catalog's listed prices, then fill the gaps."""
    base = {**(catalog.base if catalog else {}), **fields}
    if "input" not in base:
        return None
    tiers = tuple(
        PriceTier(above_input_tokens=start, **_fill({**listed, **fields}))
        for start, listed in (catalog.tiers if catalog else ())
    )
    filled = _fill(base)
    return Price(
        input=filled["input"],
        output=filled["output"],
        cache_read=filled["cache_read"],
        cache_write=filled["cache_write"],
        cache_write_1h=filled["cache_write_1h"],
        tiers=tiers,
    )


def _decimal(value: float | int | str | Decimal) -> Decimal:
    # Through str so that a YAML 0.15 becomes Decimal("0.15"), not its binary approximation.
    return Decimal(str(value))


def _aware(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _parse_effective(value: str | None, where: str) -> datetime | None:
    if value is None:
        return None
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        return _aware(datetime.fromisoformat(value))
    except ValueError:
        raise ValueError(
            f"{where}: effective_from {value!r} is not an ISO date or datetime"
        ) from None

"""The price book: what one upstream call costs, in exact Decimal USD.

Prices come from two places:

- the built-in catalog, the data snapshot bundled with the `genai-prices` package (read offline,
  never refreshed from the network), which knows effective dates, time-of-day discounts,
  prompt-length tiers and batch and service-tier variants;
- `prices` entries of the config, which override the catalog field by field and may be
  effective-dated (`effective_from`), so a price change keeps its history.

A config entry that omits a field takes it from the catalog when the catalog knows the model,
else from `input` (no discount is assumed). Missing cache prices fall back in the chain
`cache_write_1h` → `cache_write` → `input` and `cache_read` → `input`; a missing `output`
falls back to `input`; a missing `cache_read_explicit` means explicit hits cost `cache_read`.

A request is priced by what served it: its mode (`realtime`, `batch`, `async`) and the service
tier the provider reported (`default`, `standard`, `auto` and none are the base price). For
each of these the config entry's `multipliers` win; where it has none, the catalog's variant
price (batch processing, a service tier) applies. A config entry's own `tiers` replace the
catalog's prompt-length tiers, and its time-of-day `windows` multiply the result, whatever the
catalog itself charges at that hour. A price field the entry sets wins over a catalog variant of
that field, as ever: give `multipliers` to keep such a field discounted in batch or flex.

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

from tokenway.config.schema import BASE_TIERS, PriceConfig
from tokenway.domain.types import Usage

__all__ = ["DEFAULT_FX", "Price", "PriceBook", "PriceTier", "usage_cost"]

DEFAULT_FX: Mapping[str, Decimal] = {"USD": Decimal(1), "CNY": Decimal("7.1")}

_MTOK = Decimal(1_000_000)
_ZERO = Decimal(0)
_ONE = Decimal(1)
_FIELDS = ("input", "output", "cache_read", "cache_write", "cache_write_1h")
# and the one a price may leave unset (None: explicit cache hits cost `cache_read`)
_ALL_FIELDS = (*_FIELDS, "cache_read_explicit")
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
    cache_read_explicit: Decimal | None = None


class Price(msgspec.Struct, frozen=True, kw_only=True):
    """Decimal USD per 1M tokens. `cache_write` is the 5-minute TTL write price;
    `cache_read_explicit`, when set, prices reads from an explicitly created cache.

    `tiers`, ascending by threshold, hold prompt-length prices (a long prompt may cost more per
    token for the whole request); `for_prompt` picks the applicable one.
    """

    input: Decimal
    output: Decimal
    cache_read: Decimal
    cache_write: Decimal
    cache_write_1h: Decimal
    tiers: tuple[PriceTier, ...] = ()
    cache_read_explicit: Decimal | None = None

    def for_prompt(self, input_tokens: int) -> Price:
        """The flat price that applies to a request whose prompt has `input_tokens` tokens."""
        chosen: PriceTier | None = None
        for tier in self.tiers:
            if input_tokens > tier.above_input_tokens:
                chosen = tier
        if chosen is None:
            return self if not self.tiers else msgspec.structs.replace(self, tiers=())
        return Price(**{f: getattr(chosen, f) for f in _ALL_FIELDS})

    def scaled(self, factor: Decimal) -> Price:
        """Every price, tiers included, times `factor` (a mode, tier or time-of-day multiplier)."""
        if factor == _ONE:
            return self
        tiers = tuple(
            PriceTier(above_input_tokens=t.above_input_tokens, **_times(t, factor))
            for t in self.tiers
        )
        return Price(**_times(self, factor), tiers=tiers)


def _times(price: Price | PriceTier, factor: Decimal) -> dict[str, Any]:
    out: dict[str, Any] = {f: getattr(price, f) * factor for f in _FIELDS}
    explicit = price.cache_read_explicit
    out["cache_read_explicit"] = None if explicit is None else explicit * factor
    return out


def usage_cost(price: Price, usage: Usage) -> Decimal:
    """Exact cost in USD of `usage` at `price` (tiers applied), never negative. Reads are
    priced at `cache_read_explicit` when `usage.cache_explicit` says they hit an explicit cache
    and the price has one.

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
    read_price = p.cache_read
    if usage.cache_explicit and p.cache_read_explicit is not None:
        read_price = p.cache_read_explicit
    total = (
        uncached * p.input
        + cache_read * read_price
        + write_5m * p.cache_write
        + write_1h * p.cache_write_1h
        + output * p.output
    )
    return max(total / _MTOK, _ZERO)


class _Window(msgspec.Struct, frozen=True):
    """A daily UTC window in seconds of the day, `start` inclusive, `end` exclusive."""

    start: int
    end: int
    multiplier: Decimal

    def holds(self, moment: datetime) -> bool:
        t = moment.astimezone(UTC)
        second = t.hour * 3600 + t.minute * 60 + t.second
        if self.start < self.end:
            return self.start <= second < self.end
        return second >= self.start or second < self.end  # wraps past midnight


class _Override(msgspec.Struct, frozen=True):
    since: datetime | None
    fields: dict[str, Decimal]
    # None keeps the catalog's prompt-length tiers; a tuple (maybe empty) replaces them.
    tiers: tuple[tuple[int, dict[str, Decimal]], ...] | None = None
    windows: tuple[_Window, ...] = ()
    multipliers: dict[str, Decimal] = msgspec.field(default_factory=dict)


class PriceBook:
    """Prices by (provider name, model name) at a point in time.

    `provider` is the free-form provider name of our config; the catalog is searched under the
    genai-prices provider of that name when there is one, then across all catalog providers.
    """

    def __init__(
        self,
        overrides: Iterable[PriceConfig],
        fx: Mapping[str, Decimal | float] | None = None,
    ) -> None:
        rates = {k.upper(): v for k, v in DEFAULT_FX.items()}
        rates.update({k.upper(): _decimal(v) for k, v in (fx or {}).items()})
        self._snapshot = data_snapshot.get_snapshot()
        self._lookups: dict[tuple[str, str], tuple[gp.Provider, gp.ModelInfo] | None] = {}
        self._overrides: dict[tuple[str, str], list[_Override]] = {}
        for i, entry in enumerate(overrides):
            where = f"prices[{i}] ({entry.provider}/{entry.model})"
            rate = rates.get(entry.currency.upper())
            if rate is None or not rate.is_finite() or rate <= 0:
                raise ValueError(f"{where}: no exchange rate for currency {entry.currency!r}")
            fields = _converted(entry, rate, where)
            known = self._catalog(entry.provider, entry.model, datetime.now(UTC), None, False)
            if "input" not in fields and known is None:
                raise ValueError(
                    f"{where}: 'input' is required because the built-in catalog does not "
                    "know this model"
                )
            tiers = None
            if entry.tiers is not None:
                tiers = tuple(
                    (t.above_input_tokens, _converted(t, rate, f"{where}: tiers[{j}]"))
                    for j, t in sorted(
                        enumerate(entry.tiers), key=lambda jt: jt[1].above_input_tokens
                    )
                )
            override = _Override(
                since=_parse_effective(entry.effective_from, where),
                fields=fields,
                tiers=tiers,
                windows=tuple(
                    _Window(_seconds(w.start), _seconds(w.end), _decimal(w.multiplier))
                    for w in entry.windows
                ),
                multipliers={k.lower(): _decimal(v) for k, v in entry.multipliers.items()},
            )
            self._overrides.setdefault((entry.provider, entry.model), []).append(override)
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
        mode: str = "realtime",
        batch_api: bool = True,
    ) -> Price | None:
        """The price in force at `at` (default now) for a request in `mode` (`realtime`,
        `batch`, `async`; `batch=True` is `mode="batch"`) served at `service_tier` (as the
        provider reported it), or None when neither config nor catalog knows the model.

        `batch_api=False` says a batch-mode request went to the provider's normal endpoint
        (tokenway ran the line itself): the provider bills it at its normal price, so the
        catalog's batch-API price does not apply; a config `multipliers` entry for the mode
        (the operator's own price for such work) still does."""
        when = _aware(at) if at is not None else datetime.now(UTC)
        reported_batch = (service_tier or "").lower() == "batch"
        mode_key, tier = _selectors("batch" if batch else mode, service_tier)
        override = self._override_at(provider, model, when)
        multipliers = override.multipliers if override else {}
        # What the config prices with a multiplier is not also taken from a catalog variant.
        catalog = self._catalog(
            provider,
            model,
            when,
            None if tier in multipliers else tier,
            mode_key == "batch" and mode_key not in multipliers and (batch_api or reported_batch),
        )
        price = _merge(override, catalog)
        if price is None or override is None:
            return price
        factor = _ONE
        for key in dict.fromkeys((mode_key, tier)):  # in order: Decimal rounding is too
            if key is not None and key in multipliers:
                factor *= multipliers[key]
        window = next((w for w in override.windows if w.holds(when)), None)
        if window is not None:
            factor *= window.multiplier
        return price.scaled(factor)

    def cost(
        self,
        provider: str,
        model: str,
        usage: Usage,
        at: datetime | None = None,
        *,
        batch: bool = False,
        mode: str = "realtime",
        batch_api: bool = True,
    ) -> Decimal:
        """Exact USD cost of `usage` for a request started at `at` in `mode`, at the service
        tier the usage reports (`batch_api` as for `price`); zero when the model has no known
        price."""
        price = self.price(
            provider,
            model,
            at,
            service_tier=usage.service_tier,
            batch=batch,
            mode=mode,
            batch_api=batch_api,
        )
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
        self, provider: str, model: str, when: datetime, tier: str | None, batch: bool
    ) -> _Partial | None:
        found = self._lookup(provider, model)
        if found is None:
            return None
        owner, info = found
        context: dict[str, str] = {}
        # Variants belong to the provider that lists the model, not to a fallback provider.
        if any(m is info for m in owner.models):
            if tier:
                context["service_tier"] = tier
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


def _merge(override: _Override | None, catalog: _Partial | None) -> Price | None:
    """The override's fields on top of the catalog's listed prices, gaps filled; the override's
    tiers (omitted fields at the entry's base) replace the catalog's when it has any."""
    fields = override.fields if override else {}
    base = {**(catalog.base if catalog else {}), **fields}
    if "input" not in base:
        return None
    filled = _fill(base)
    if override is not None and override.tiers is not None:
        tiers = tuple(
            PriceTier(above_input_tokens=start, **{**filled, **listed})
            for start, listed in override.tiers
        )
    else:
        tiers = tuple(
            PriceTier(above_input_tokens=start, **_fill({**listed, **fields}))
            for start, listed in (catalog.tiers if catalog else ())
        )
    return Price(**filled, tiers=tiers)


def _selectors(mode: str, service_tier: str | None) -> tuple[str | None, str | None]:
    """The mode and the served tier as multiplier keys, None where they are the base price.

    A tier reported as `batch` (Anthropic's usage of a batch request) is the batch mode.
    """
    tier = (service_tier or "").lower() or None
    mode_key: str | None = mode.lower()
    if tier == "batch":
        mode_key, tier = "batch", None
    if mode_key in BASE_TIERS:
        mode_key = None
    if tier in BASE_TIERS:
        tier = None
    return mode_key, tier


def _converted(entry: Any, rate: Decimal, where: str) -> dict[str, Decimal]:
    """The price fields `entry` sets, in USD, each checked to be a non-negative number."""
    fields = {
        f: _decimal(getattr(entry, f)) / rate for f in _ALL_FIELDS if getattr(entry, f) is not None
    }
    for name, value in fields.items():
        if not value.is_finite() or value < 0:
            raise ValueError(f"{where}: {name} must be a non-negative number")
    return fields


def _seconds(hhmm: str) -> int:
    hours, minutes = hhmm.split(":")
    return int(hours) * 3600 + int(minutes) * 60


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

"""The raw config schema: what a YAML file may say. Unknown keys are rejected.

`load.py` turns this into a validated `Config` whose cross-references (a target's provider,
a key's models) are checked, with errors that name the path.
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal

import msgspec

ProviderKind = Literal["openai", "anthropic", "gemini"]


class Strict(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class RateLimits(Strict):
    rpm: int | None = None
    tpm: int | None = None


class ProviderConfig(Strict):
    """An upstream. `base_url` is what the provider's own SDK calls its base URL.

    `base_url: sim://NAME` points at the simulated provider NAME of the `sim` section.
    For Azure OpenAI set `azure: true` and `api_version`; targets then name deployments.
    `responses: true` (kind openai) says the upstream also serves the Responses API at
    `POST {base_url}/responses`: Responses requests then reach it in their own shape instead
    of as chat completions.
    `batch_api: true` (kind openai, not azure) says the upstream serves OpenAI's Batch API
    (`/files`, `/batches`): a batch whose model's first target is this provider is handed to
    it whole, and its lines are priced at the batch price.
    """

    name: str
    kind: ProviderKind
    base_url: str
    api_key: str | list[str] | None = None
    region: str | None = None
    limits: RateLimits | None = None
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    azure: bool = False
    api_version: str | None = None
    timeout_s: float = 600.0
    connect_timeout_s: float = 5.0
    embeddings: bool | None = None
    responses: bool = False
    batch_api: bool = False


Capability = Literal["tools", "vision", "json"]
Policy = Literal["priority", "weighted", "cost", "latency"]


class TargetConfig(Strict):
    """A deployment of a model. `capabilities` (default: all) and `context_window` (default:
    the model's) filter out requests it cannot serve; `limits` is its own rpm/tpm budget."""

    provider: str
    model: str
    weight: float = 1.0
    context_window: int | None = None
    capabilities: list[Capability] | None = None
    limits: RateLimits | None = None


class HedgeConfig(Strict):
    """Race a slow first attempt: after `after_ms` (default: the first target's recent
    `percentile` time to first token, or `default_ms` until it has 20 samples) without a
    result, the same request goes to the next target too; the first to produce wins.

    The default percentile is 90, not 95: a tail of exactly 5% slow requests puts p95 on the
    slow requests themselves, and the hedge would fire too late to help."""

    after_ms: float | None = None
    percentile: int = 90
    default_ms: float = 1000.0

    def __post_init__(self) -> None:
        if not 1 <= self.percentile <= 99:
            raise ValueError("percentile: must be 1 to 99")


class TaskRoute(Strict):
    """The tier of targets serving one task class, with its own policy, deadline and hedging."""

    targets: list[TargetConfig]
    policy: Policy | None = None
    timeout_ms: int | None = None
    hedge: HedgeConfig | None = None


class CapacityConfig(Strict):
    """A cap on a model's requests in flight, shared by priority class (see limits/priority)."""

    max_in_flight: int
    queue: int = 64
    max_wait_ms: float = 1000.0

    def __post_init__(self) -> None:
        if self.max_in_flight < 1 or self.queue < 0 or self.max_wait_ms < 0:
            raise ValueError("max_in_flight must be at least 1, queue and max_wait_ms >= 0")


class ModelConfig(Strict):
    """A name clients send as `model`. `targets` serve requests of no listed task; `tasks` maps
    a task class (`x-tokenway-task`, or the `task` tag) to its own tier."""

    name: str
    targets: list[TargetConfig]
    context_window: int | None = None
    kind: Literal["chat", "embedding"] = "chat"
    policy: Policy = "priority"
    timeout_ms: int | None = None
    hedge: HedgeConfig | None = None
    tasks: dict[str, TaskRoute] = msgspec.field(default_factory=dict)
    capacity: CapacityConfig | None = None


class RetryConfig(Strict):
    """Re-attempts at most `ratio` of requests over `window_s`, with `floor` always allowed in
    flight; at most `max_attempts` attempts per request; pauses from `backoff_ms`."""

    ratio: float = 0.2
    floor: int = 3
    window_s: float = 10.0
    max_attempts: int = 4
    backoff_ms: float = 50.0


class BreakerSettings(Strict):
    consecutive: int = 5
    error_rate: float = 0.5
    window_s: float = 10.0
    min_requests: int = 20
    base_s: float = 1.0
    max_s: float = 60.0


class RoutingConfig(Strict):
    retry: RetryConfig = msgspec.field(default_factory=RetryConfig)
    breaker: BreakerSettings = msgspec.field(default_factory=BreakerSettings)
    timeout_ms: int = 600_000
    # Hedges may be at most this share of hedged routes' requests (a cost ceiling).
    hedge_ratio: float = 0.1
    # How batch lines and async tasks pick among a route's targets: work that can wait goes
    # to the cheapest capacity first (`cost`), or follows the route's own policy (`route`).
    deferred_policy: Literal["cost", "route"] = "cost"


_PRICE_FIELDS = (
    "input",
    "output",
    "cache_read",
    "cache_write",
    "cache_write_1h",
    "cache_read_explicit",
)
# Tiers and modes that are the base price itself: a multiplier for them would be ambiguous.
BASE_TIERS = frozenset({"default", "standard", "auto", "realtime"})
_HHMM = re.compile(r"([01][0-9]|2[0-3]):[0-5][0-9]")


def _non_negative(where: str, value: float | None) -> None:
    if value is not None and not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{where}: must be a non-negative number")


class PriceTierConfig(Strict):
    """Prices for the whole request when its prompt (cached tokens included) has more than
    `above_input_tokens` tokens. An omitted field takes the entry's base value."""

    above_input_tokens: int
    input: float | None = None
    output: float | None = None
    cache_read: float | None = None
    cache_write: float | None = None
    cache_write_1h: float | None = None
    cache_read_explicit: float | None = None

    def __post_init__(self) -> None:
        if self.above_input_tokens < 0:
            raise ValueError("above_input_tokens: must be a non-negative token count")
        for name in _PRICE_FIELDS:
            _non_negative(name, getattr(self, name))


class PriceWindowConfig(Strict):
    """A daily UTC window, `start` inclusive to `end` exclusive ("HH:MM"; an `end` before
    `start` wraps past midnight): requests starting inside cost `multiplier` times the price."""

    start: str
    end: str
    multiplier: float

    def __post_init__(self) -> None:
        for name in ("start", "end"):
            value = getattr(self, name)
            if not _HHMM.fullmatch(value):
                raise ValueError(f"{name}: expected a UTC time of day HH:MM, got {value!r}")
        if self.start == self.end:
            raise ValueError(f"end: equals start ({self.start}), the window would be empty")
        _non_negative("multiplier", self.multiplier)


class PriceConfig(Strict):
    """USD (or `currency`, converted at the top-level `fx` rate) per 1M tokens. Omitted fields
    come from the built-in catalog.

    `cache_read_explicit` prices reads from a cache the client created explicitly where the
    provider prices them apart from implicit hits (default: `cache_read`). `tiers` replace the
    catalog's prompt-length tiers (`[]` removes them). `windows` apply a multiplier by time of
    day (the first window holding the request's start wins). `multipliers` scale every price by
    mode (`batch`, `async`) and by the service tier the provider reports served the request
    (`flex`, `priority`, ...); a multiplier given here replaces the catalog's variant price.
    """

    provider: str
    model: str
    input: float | None = None
    output: float | None = None
    cache_read: float | None = None
    cache_write: float | None = None
    cache_write_1h: float | None = None
    cache_read_explicit: float | None = None
    currency: str = "USD"
    effective_from: str | None = None
    tiers: list[PriceTierConfig] | None = None
    windows: list[PriceWindowConfig] = msgspec.field(default_factory=list)
    multipliers: dict[str, float] = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        _non_negative("cache_read_explicit", self.cache_read_explicit)
        starts = [t.above_input_tokens for t in self.tiers or ()]
        if len(set(starts)) != len(starts):
            raise ValueError("tiers: two tiers have the same above_input_tokens")
        for name, value in self.multipliers.items():
            if name.lower() in BASE_TIERS:
                raise ValueError(
                    f"multipliers.{name}: {name!r} is the base price; set the price fields"
                )
            _non_negative(f"multipliers.{name}", value)


class PlanPrice(Strict):
    """A per-model line of a price sheet: what the client pays per 1M tokens of `model` (the
    name clients send). Omitted `cache_read` bills cached tokens at `input`."""

    model: str
    input: float
    output: float
    cache_read: float | None = None
    cache_write: float | None = None


class PlanConfig(Strict):
    """What a key is charged. Models on the sheet pay its prices; others pay the upstream cost
    times `1 + markup`. Without `pass_cache_discount`, cached prompt tokens are charged as if
    they were not cached (the margin of a good cache hit rate stays with the operator)."""

    name: str
    markup: float = 0.0
    pass_cache_discount: bool = True
    prices: list[PlanPrice] = msgspec.field(default_factory=list)


BudgetPeriod = Literal["total", "day", "month"]


class KeyConfig(Strict):
    """A virtual key. `end_user_budget_usd` caps each end user (the request's `user`) of this
    key separately, over `end_user_budget_period`; hardness follows `budget_hard`."""

    name: str
    key: str
    plan: str | None = None
    rpm: int | None = None
    tpm: int | None = None
    budget_usd: float | None = None
    budget_period: BudgetPeriod = "total"
    budget_hard: bool = True
    end_user_budget_usd: float | None = None
    end_user_budget_period: BudgetPeriod = "day"
    models: list[str] | None = None
    team: str | None = None
    regions: list[str] | None = None
    priority: Literal["high", "normal", "low"] = "normal"


class TeamConfig(Strict):
    """A team: keys name it with `team:`. Its budget caps the sum over all its keys; its plan
    applies to keys that name none; `end_user_budget_usd` caps each end user across the team."""

    name: str
    plan: str | None = None
    budget_usd: float | None = None
    budget_period: BudgetPeriod = "total"
    budget_hard: bool = True
    end_user_budget_usd: float | None = None
    end_user_budget_period: BudgetPeriod = "day"


class StorageConfig(Strict):
    """`state: redis://host:6379/0` shares limits and budgets between replicas. When Redis is
    unreachable for `state_timeout_ms`, `state_failure: open` falls back to local limits at
    1/`replicas` of each (per worker), `closed` answers 429."""

    ledger: str = "sqlite:///tokenway-data/ledger.db"
    state: str = "memory"
    state_prefix: str = "tokenway:"
    state_failure: Literal["open", "closed"] = "open"
    state_timeout_ms: float = 1000.0
    replicas: int = 1
    # Responses API responses stored for `previous_response_id` are deleted after this long.
    responses_retention_days: float = 30.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.responses_retention_days) and self.responses_retention_days > 0):
            raise ValueError("responses_retention_days: must be a positive number of days")


class ServerConfig(Strict):
    max_body_bytes: int = 32 * 1024 * 1024
    request_timeout_s: float = 600.0
    log_level: str = "info"


_WINDOW = re.compile(r"[1-9][0-9]*[smhd]")
_WINDOW_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def window_seconds(window: str) -> int:
    """Seconds of a completion window such as `24h` (`s`, `m`, `h` or `d`)."""
    if not _WINDOW.fullmatch(window):
        raise ValueError(f"expected a duration like 24h, 30m or 7d, got {window!r}")
    return int(window[:-1]) * _WINDOW_S[window[-1]]


class BatchConfig(Strict):
    """The Batch API (`/v1/files`, `/v1/batches`) and the workers that run its lines.

    Each replica runs at most `concurrency` lines at a time, at low priority, and holds each
    line it runs under a lease of `lease_s` seconds (renewed while it runs); a replica that
    dies leaves its lines to be taken over when their leases lapse. `completion_windows` are
    the `completion_window` values a batch may ask for; `max_lines` and `max_file_bytes` bound
    an input file. Dispatch waits while interactive requests queue for a model's capacity or
    the event loop lags by more than `yield_lag_ms`. A batch handed to its provider's Batch
    API (`providers[].batch_api`) is polled every `upstream_poll_s` seconds.
    """

    concurrency: int = 4
    lease_s: float = 60.0
    completion_windows: list[str] = msgspec.field(default_factory=lambda: ["24h"])
    max_lines: int = 50_000
    max_file_bytes: int = 100 * 1024 * 1024
    yield_lag_ms: float = 25.0
    upstream_poll_s: float = 30.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.upstream_poll_s) and self.upstream_poll_s > 0):
            raise ValueError("upstream_poll_s: must be a positive number of seconds")
        if self.concurrency < 1:
            raise ValueError("concurrency: must be at least 1")
        if not (math.isfinite(self.lease_s) and self.lease_s >= 1):
            raise ValueError("lease_s: must be at least 1 second")
        if not self.completion_windows:
            raise ValueError("completion_windows: list at least one window, such as 24h")
        for i, window in enumerate(self.completion_windows):
            try:
                window_seconds(window)
            except ValueError as exc:
                raise ValueError(f"completion_windows[{i}]: {exc}") from None
        if self.max_lines < 1 or self.max_file_bytes < 1:
            raise ValueError("max_lines and max_file_bytes: must be at least 1")
        _non_negative("yield_lag_ms", self.yield_lag_ms)


_MAX_DEADLINE_S = 30 * 86400


class AsyncConfig(Strict):
    """Async tasks (`/v1/async/...`): one request run in the background, like a batch line.

    A task's deadline is its `x-tokenway-deadline-s` header (whole seconds, at most
    `max_deadline_s`), else `default_deadline_s`. A task that asks for a webhook
    (`x-tokenway-webhook`) is POSTed to it when it ends, signed with `webhook_secret`
    (HMAC-SHA256; without a secret, webhooks are refused), and retried up to
    `webhook_attempts` times, `webhook_backoff_s` after the first failure and doubling. Ended
    tasks are kept `retention_days`.
    """

    webhook_secret: str | None = None
    default_deadline_s: int = 3600
    max_deadline_s: int = 86400
    webhook_attempts: int = 6
    webhook_backoff_s: float = 10.0
    webhook_timeout_s: float = 10.0
    # Webhooks to loopback, private, link-local and other non-public addresses are refused
    # (a client's URL must not reach the operator's own network) unless this allows them.
    webhook_private: bool = False
    retention_days: float = 7.0

    def __post_init__(self) -> None:
        if self.webhook_secret == "":
            # `${VAR:-}` left unset: no webhooks, as if the key were absent
            self.webhook_secret = None
        if self.webhook_secret is not None and len(self.webhook_secret) < 16:
            raise ValueError("webhook_secret: must be at least 16 characters")
        if not 1 <= self.max_deadline_s <= _MAX_DEADLINE_S:
            raise ValueError(f"max_deadline_s: must be from 1 to {_MAX_DEADLINE_S} (30 days)")
        if not 1 <= self.default_deadline_s <= self.max_deadline_s:
            raise ValueError(
                f"default_deadline_s: must be from 1 to max_deadline_s ({self.max_deadline_s})"
            )
        if not 1 <= self.webhook_attempts <= 20:
            raise ValueError("webhook_attempts: must be from 1 to 20")
        for name in ("webhook_backoff_s", "webhook_timeout_s", "retention_days"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name}: must be a positive number")

    def _shown(self) -> dict[str, Any]:
        # The secret must not reach a log line or a traceback by way of the config.
        shown = {f: getattr(self, f) for f in self.__struct_fields__}
        if shown["webhook_secret"] is not None:
            shown["webhook_secret"] = "<redacted>"
        return shown

    def __repr__(self) -> str:
        return "AsyncConfig(" + ", ".join(f"{k}={v!r}" for k, v in self._shown().items()) + ")"

    def __rich_repr__(self) -> list[tuple[str, Any]]:
        return list(self._shown().items())


class Fault(Strict):
    """An injected failure in a simulated provider.

    `kind`: `status` (answer `status`), `timeout` (never answer), `drop` (close the connection
    before answering), `cut` (stream `after_chunks` chunks, then close). `rate` is the
    probability per request; `first_n`, if set, applies the fault to the first N requests only.
    """

    kind: Literal["status", "timeout", "drop", "cut"]
    status: int = 500
    rate: float = 1.0
    first_n: int | None = None
    after_chunks: int = 2
    retry_after_s: float | None = None


class SimScenario(Strict):
    """Behaviour of one simulated provider."""

    ttft_ms: float = 20.0
    tokens_per_s: float = 400.0
    jitter: float = 0.0
    # A heavy tail: this share of requests waits `slow_factor` times the TTFT for its first token.
    slow_rate: float = 0.0
    slow_factor: float = 10.0
    output_tokens: int = 16
    rpm: int | None = None
    tpm: int | None = None
    faults: list[Fault] = msgspec.field(default_factory=list)
    prefix_cache: bool = True
    usage_style: Literal["openai", "deepseek"] = "openai"
    api_key: str | None = None
    seed: int = 0
    # Hidden reasoning / visible thinking tokens for models and requests that think.
    reasoning_tokens: int = 32
    # Automatic prefix caching (OpenAI, Gemini) reports the longest seen prefix rounded down to
    # `cache_block_tokens`, once it reaches `cache_min_tokens`; Anthropic writes a breakpoint
    # only from `cache_min_tokens` on.
    cache_block_tokens: int = 64
    cache_min_tokens: int = 1024
    # The Batch API (kind openai): how long each line of an upstream batch takes, and whether
    # creating a batch is refused (`refuse`: 500) or the batch ends `failed` (`fail`).
    batch_line_ms: float = 5.0
    batch_fault: Literal["none", "refuse", "fail"] = "none"


class SimProviderConfig(Strict):
    name: str
    kind: ProviderKind
    host: str = "127.0.0.1"
    port: int = 0
    scenario: SimScenario = msgspec.field(default_factory=SimScenario)


class RawConfig(Strict):
    listen: str = "127.0.0.1:4141"
    admin_key: str | None = None
    storage: StorageConfig = msgspec.field(default_factory=StorageConfig)
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    providers: list[ProviderConfig] = msgspec.field(default_factory=list)
    models: list[ModelConfig] = msgspec.field(default_factory=list)
    prices: list[PriceConfig] = msgspec.field(default_factory=list)
    # Units of each currency per one US dollar, for `prices` entries in that currency.
    fx: dict[str, float] = msgspec.field(default_factory=dict)
    keys: list[KeyConfig] = msgspec.field(default_factory=list)
    teams: list[TeamConfig] = msgspec.field(default_factory=list)
    routing: RoutingConfig = msgspec.field(default_factory=RoutingConfig)
    plans: list[PlanConfig] = msgspec.field(default_factory=list)
    sim: list[SimProviderConfig] = msgspec.field(default_factory=list)
    batch: BatchConfig = msgspec.field(default_factory=BatchConfig)
    async_: AsyncConfig = msgspec.field(default_factory=AsyncConfig, name="async")

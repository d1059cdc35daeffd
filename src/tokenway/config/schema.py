"""The raw config schema: what a YAML file may say. Unknown keys are rejected.

`load.py` turns this into a validated `Config` whose cross-references (a target's provider,
a key's models) are checked, with errors that name the path.
"""

from __future__ import annotations

from typing import Literal

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


class TargetConfig(Strict):
    provider: str
    model: str
    weight: float = 1.0


class ModelConfig(Strict):
    name: str
    targets: list[TargetConfig]
    context_window: int | None = None
    kind: Literal["chat", "embedding"] = "chat"


class PriceConfig(Strict):
    """USD (or `currency`) per 1M tokens. Omitted fields come from the built-in catalog."""

    provider: str
    model: str
    input: float | None = None
    output: float | None = None
    cache_read: float | None = None
    cache_write: float | None = None
    cache_write_1h: float | None = None
    currency: str = "USD"
    effective_from: str | None = None


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


class KeyConfig(Strict):
    name: str
    key: str
    plan: str | None = None
    rpm: int | None = None
    tpm: int | None = None
    budget_usd: float | None = None
    budget_period: Literal["total", "day", "month"] = "total"
    budget_hard: bool = True
    models: list[str] | None = None
    team: str | None = None


class StorageConfig(Strict):
    ledger: str = "sqlite:///tokenway-data/ledger.db"
    state: str = "memory"


class ServerConfig(Strict):
    max_body_bytes: int = 32 * 1024 * 1024
    request_timeout_s: float = 600.0
    log_level: str = "info"


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
    keys: list[KeyConfig] = msgspec.field(default_factory=list)
    plans: list[PlanConfig] = msgspec.field(default_factory=list)
    sim: list[SimProviderConfig] = msgspec.field(default_factory=list)

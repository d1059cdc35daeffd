"""Config loading in two stages: YAML → raw schema (unknown keys rejected) → validated `Config`.

Every error names the path of what is wrong, e.g.
`models[2].targets[0].provider: unknown provider 'opneai'`.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

import msgspec
import yaml

from tokenway.config.schema import (
    KeyConfig,
    ModelConfig,
    PlanConfig,
    ProviderConfig,
    RawConfig,
    TeamConfig,
)


class ConfigError(Exception):
    """A config that cannot be served. The message names the offending path."""


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(node: Any, env: dict[str, str] | os._Environ[str], path: str = "") -> Any:
    """Replace `${VAR}` (or `${VAR:-default}`) in every string of a parsed YAML tree."""
    if isinstance(node, str):

        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            where = path or "config"
            raise ConfigError(f"{where}: environment variable {name} is not set")

        return _VAR.sub(sub, node)
    if isinstance(node, dict):
        return {k: expand_env(v, env, f"{path}.{k}" if path else str(k)) for k, v in node.items()}
    if isinstance(node, list):
        return [expand_env(v, env, f"{path}[{i}]") for i, v in enumerate(node)]
    return node


_MSGSPEC_PATH = re.compile(r"^(.*?)(?: - at `\$(.*)`)?$", re.S)
_UNKNOWN = re.compile(r"Object contains unknown field `([^`]*)`")


def _path_error(exc: msgspec.ValidationError) -> ConfigError:
    m = _MSGSPEC_PATH.match(str(exc))
    msg, where = (m.group(1), m.group(2) or "") if m else (str(exc), "")
    where = where.lstrip(".")
    unknown = _UNKNOWN.match(msg)
    if unknown:
        key = unknown.group(1)
        full = f"{where}.{key}" if where else key
        return ConfigError(f"{full}: unknown key")
    return ConfigError(f"{where or 'config'}: {msg}")


class Config:
    """A validated config with lookups by name."""

    def __init__(self, raw: RawConfig, source: str | None = None) -> None:
        self.raw = raw
        self.source = source
        self.providers: dict[str, ProviderConfig] = {}
        self.models: dict[str, ModelConfig] = {}
        self.keys: list[KeyConfig] = list(raw.keys)
        self.plans: dict[str, PlanConfig] = {}
        self.teams: dict[str, TeamConfig] = {}
        self._validate()
        host, _, port = raw.listen.rpartition(":")
        self.host = host.strip("[]") or "127.0.0.1"
        self.port = int(port)

    def _validate(self) -> None:
        raw = self.raw
        if not re.fullmatch(r"(\[[0-9a-fA-F:]+\]|[^:\s]*):\d{1,5}", raw.listen):
            raise ConfigError(f"listen: expected HOST:PORT, got {raw.listen!r}")
        sims = {s.name for s in raw.sim}
        for i, p in enumerate(raw.providers):
            if p.name in self.providers:
                raise ConfigError(f"providers[{i}].name: duplicate provider {p.name!r}")
            if p.base_url.startswith("sim://") and p.base_url[6:] not in sims:
                raise ConfigError(
                    f"providers[{i}].base_url: no simulated provider named {p.base_url[6:]!r}"
                )
            if not re.match(r"^(https?|sim)://", p.base_url):
                raise ConfigError(f"providers[{i}].base_url: expected an http(s) URL")
            if p.azure and p.kind != "openai":
                raise ConfigError(f"providers[{i}].azure: only for kind openai")
            if p.responses and (p.kind != "openai" or p.azure):
                raise ConfigError(
                    f"providers[{i}].responses: only for kind openai (and not with azure)"
                )
            if p.batch_api and (p.kind != "openai" or p.azure):
                raise ConfigError(
                    f"providers[{i}].batch_api: only for kind openai (and not with azure)"
                )
            self.providers[p.name] = p
        for i, m in enumerate(raw.models):
            if m.name in self.models:
                raise ConfigError(f"models[{i}].name: duplicate model {m.name!r}")
            if not m.targets:
                raise ConfigError(f"models[{i}].targets: a model needs at least one target")
            for j, t in enumerate(m.targets):
                if t.provider not in self.providers:
                    raise ConfigError(
                        f"models[{i}].targets[{j}].provider: unknown provider {t.provider!r}"
                    )
                if m.kind == "embedding" and self.providers[t.provider].kind == "anthropic":
                    raise ConfigError(
                        f"models[{i}].targets[{j}].provider: {t.provider!r} (anthropic) "
                        "offers no embeddings"
                    )
            self.models[m.name] = m
        for i, pr in enumerate(raw.prices):
            if pr.provider not in self.providers:
                raise ConfigError(f"prices[{i}].provider: unknown provider {pr.provider!r}")
        for currency, rate in raw.fx.items():
            if not (math.isfinite(rate) and rate > 0):
                raise ConfigError(f"fx.{currency}: must be a positive number (units per USD)")
        for i, plan in enumerate(raw.plans):
            if plan.name in self.plans:
                raise ConfigError(f"plans[{i}].name: duplicate plan {plan.name!r}")
            if plan.markup < -1:
                raise ConfigError(f"plans[{i}].markup: must be at least -1")
            self.plans[plan.name] = plan
        for i, team in enumerate(raw.teams):
            if team.name in self.teams:
                raise ConfigError(f"teams[{i}].name: duplicate team {team.name!r}")
            if team.plan is not None and team.plan not in self.plans:
                raise ConfigError(f"teams[{i}].plan: unknown plan {team.plan!r}")
            _check_budgets(f"teams[{i}]", team.budget_usd, team.end_user_budget_usd)
            self.teams[team.name] = team
        names: set[str] = set()
        secrets: set[str] = set()
        for i, k in enumerate(raw.keys):
            if k.name in names:
                raise ConfigError(f"keys[{i}].name: duplicate key name {k.name!r}")
            if k.key in secrets:
                raise ConfigError(f"keys[{i}].key: the same secret is given to two keys")
            if not k.key:
                raise ConfigError(f"keys[{i}].key: empty")
            names.add(k.name)
            secrets.add(k.key)
            if k.plan is not None and k.plan not in self.plans:
                raise ConfigError(f"keys[{i}].plan: unknown plan {k.plan!r}")
            _check_budgets(f"keys[{i}]", k.budget_usd, k.end_user_budget_usd)
            for j, model in enumerate(k.models or []):
                if model not in self.models:
                    raise ConfigError(f"keys[{i}].models[{j}]: unknown model {model!r}")


def _check_budgets(where: str, budget: float | None, per_user: float | None) -> None:
    for name, value in (("budget_usd", budget), ("end_user_budget_usd", per_user)):
        if value is not None and not value >= 0:
            raise ConfigError(f"{where}.{name}: must be a non-negative number")


def parse_config(
    data: Any, *, env: dict[str, str] | None = None, source: str | None = None
) -> Config:
    """Validate an already-parsed YAML document."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("config: expected a mapping at the top level")
    data = expand_env(data, os.environ if env is None else env)
    try:
        raw = msgspec.convert(data, RawConfig, strict=False)
    except msgspec.ValidationError as exc:
        raise _path_error(exc) from None
    return Config(raw, source)


def load_config(path: str | Path, *, env: dict[str, str] | None = None) -> Config:
    """Read, expand and validate a YAML config file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read: {exc.strerror}") from None
    # `${VAR}` is not YAML-safe inside flow mappings (`{api_key: ${KEY}}`), so references are
    # parked behind plain placeholders while YAML parses, then restored for expansion.
    refs: list[str] = []

    def park(m: re.Match[str]) -> str:
        refs.append(m.group(0))
        return f"__tokenway_ref_{len(refs) - 1}__"

    try:
        data = yaml.safe_load(_VAR.sub(park, text))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from None
    return parse_config(_unpark(data, refs), env=env, source=str(p))


_PARKED = re.compile(r"__tokenway_ref_(\d+)__")


def _unpark(node: Any, refs: list[str]) -> Any:
    if isinstance(node, str):
        return _PARKED.sub(lambda m: refs[int(m.group(1))], node)
    if isinstance(node, dict):
        return {k: _unpark(v, refs) for k, v in node.items()}
    if isinstance(node, list):
        return [_unpark(v, refs) for v in node]
    return node

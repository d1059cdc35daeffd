from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from .stack import Stack

KEY = "sk-test-app"
LIMITED_KEY = "sk-test-limited"
NARROW_KEY = "sk-test-narrow"
UPSTREAM_KEY = "sk-upstream-secret-value"
PLANNED_KEY = "sk-test-planned"


def stack_doc(ledger: Path) -> dict[str, Any]:
    fast = {"ttft_ms": 1, "tokens_per_s": 5000, "output_tokens": 12, "api_key": UPSTREAM_KEY}
    return {
        "admin_key": "sk-test-admin",
        "storage": {"ledger": f"sqlite:///{ledger}"},
        "sim": [
            {"name": "s-openai", "kind": "openai", "scenario": fast},
            {"name": "s-anthropic", "kind": "anthropic", "scenario": fast},
            {"name": "s-gemini", "kind": "gemini", "scenario": fast},
            {
                "name": "s-deepseek",
                "kind": "openai",
                "scenario": {**fast, "usage_style": "deepseek"},
            },
            {"name": "s-azure", "kind": "openai", "scenario": fast},
            {
                "name": "s-broken",
                "kind": "openai",
                "scenario": {**fast, "faults": [{"kind": "status", "status": 503}]},
            },
        ],
        "providers": [
            {
                "name": "openai",
                "kind": "openai",
                "base_url": "sim://s-openai",
                "api_key": UPSTREAM_KEY,
            },
            {
                "name": "anthropic",
                "kind": "anthropic",
                "base_url": "sim://s-anthropic",
                "api_key": UPSTREAM_KEY,
            },
            {
                "name": "gemini",
                "kind": "gemini",
                "base_url": "sim://s-gemini",
                "api_key": UPSTREAM_KEY,
            },
            {
                "name": "deepseek",
                "kind": "openai",
                "base_url": "sim://s-deepseek",
                "api_key": UPSTREAM_KEY,
                "region": "cn",
            },
            {
                "name": "azure",
                "kind": "openai",
                "base_url": "sim://s-azure",
                "api_key": UPSTREAM_KEY,
                "azure": True,
                "api_version": "2024-10-21",
            },
            {
                "name": "broken",
                "kind": "openai",
                "base_url": "sim://s-broken",
                "api_key": UPSTREAM_KEY,
            },
        ],
        "models": [
            {"name": "m-openai", "targets": [{"provider": "openai", "model": "gpt-4o-mini"}]},
            {
                "name": "m-anthropic",
                "targets": [{"provider": "anthropic", "model": "claude-sonnet-4-5"}],
            },
            {"name": "m-gemini", "targets": [{"provider": "gemini", "model": "gemini-2.5-flash"}]},
            {"name": "m-deepseek", "targets": [{"provider": "deepseek", "model": "deepseek-chat"}]},
            {"name": "m-azure", "targets": [{"provider": "azure", "model": "my-gpt-deployment"}]},
            {
                "name": "m-failover",
                "targets": [
                    {"provider": "broken", "model": "gpt-4o-mini"},
                    {"provider": "anthropic", "model": "claude-sonnet-4-5"},
                ],
            },
            {"name": "m-dead", "targets": [{"provider": "broken", "model": "gpt-4o-mini"}]},
            {
                "name": "e-openai",
                "kind": "embedding",
                "targets": [{"provider": "openai", "model": "text-embedding-3-small"}],
            },
            {
                "name": "e-gemini",
                "kind": "embedding",
                "targets": [{"provider": "gemini", "model": "gemini-embedding-001"}],
            },
        ],
        "prices": [
            {
                "provider": "openai",
                "model": "gpt-4o-mini",
                "input": 0.15,
                "cache_read": 0.075,
                "output": 0.60,
            },
        ],
        "keys": [
            {"name": "app", "key": KEY},
            {"name": "limited", "key": LIMITED_KEY, "rpm": 2},
            {"name": "narrow", "key": NARROW_KEY, "models": ["m-openai"]},
            {"name": "planned", "key": PLANNED_KEY, "plan": "resale"},
        ],
        "plans": [{"name": "resale", "markup": 0.5}],
    }


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    ledger = tmp_path_factory.mktemp("ledger") / "ledger.db"
    s = Stack(stack_doc(ledger)).start()
    yield s
    close_clients(s)
    s.stop()


class Clients:
    """Official SDK clients against a stack, cached per key and closed at the end."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self._made: dict[tuple[str, str], Any] = {}

    def openai(self, key: str = KEY) -> openai.OpenAI:
        c = self._made.get(("openai", key))
        if c is None:
            c = openai.OpenAI(base_url=self.stack.url + "/v1", api_key=key, max_retries=0)
            self._made[("openai", key)] = c
        return c  # type: ignore[no-any-return]

    def anthropic(self, key: str = KEY) -> anthropic.Anthropic:
        c = self._made.get(("anthropic", key))
        if c is None:
            c = anthropic.Anthropic(base_url=self.stack.url, api_key=key, max_retries=0)
            self._made[("anthropic", key)] = c
        return c  # type: ignore[no-any-return]

    def close(self) -> None:
        for c in self._made.values():
            c.close()


_clients: dict[int, Clients] = {}


def clients_for(stack: Stack) -> Clients:
    c = _clients.get(id(stack))
    if c is None:
        c = _clients[id(stack)] = Clients(stack)
    return c


def close_clients(stack: Stack) -> None:
    c = _clients.pop(id(stack), None)
    if c is not None:
        c.close()

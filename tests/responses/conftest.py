"""A gateway in front of one simulated provider of each kind, for the Responses API tests."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.e2e.stack import Stack
from tokenway.accounting.export import export

KEY = "sk-resp-app"
OTHER_KEY = "sk-resp-other"
UPSTREAM_KEY = "sk-upstream-resp-secret"
KINDS = ["m-openai", "m-anthropic", "m-gemini"]
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
# USD per 1M tokens for the reasoning target, so costs can be checked by hand.
PRICE = {"input": 1.0, "cache_read": 0.25, "output": 4.0}


def stack_doc(ledger: str) -> dict[str, Any]:
    fast = {"ttft_ms": 1, "tokens_per_s": 5000, "output_tokens": 12, "api_key": UPSTREAM_KEY}
    sims = {
        "s-openai": ("openai", fast),
        "s-anthropic": ("anthropic", fast),
        "s-gemini": ("gemini", fast),
        "s-cut": ("openai", {**fast, "output_tokens": 40, "faults": [{"kind": "cut"}]}),
        "s-down": ("openai", {**fast, "faults": [{"kind": "status", "status": 503}]}),
        "s-long": ("openai", {**fast, "output_tokens": 60}),
        "s-long-ant": ("anthropic", {**fast, "output_tokens": 60}),
        # OpenAI-kind upstreams that serve the Responses API (`responses: true`)
        "s-native": ("openai", fast),
        "s-native-down": ("openai", {**fast, "faults": [{"kind": "status", "status": 503}]}),
        # cut after four text deltas (created, in_progress, item and part come first)
        "s-native-cut": (
            "openai",
            {**fast, "output_tokens": 40, "faults": [{"kind": "cut", "after_chunks": 8}]},
        ),
    }
    return {
        "storage": {"ledger": ledger},
        "sim": [{"name": n, "kind": k, "scenario": s} for n, (k, s) in sims.items()],
        "providers": [
            {
                "name": n[2:],
                "kind": k,
                "base_url": f"sim://{n}",
                "api_key": UPSTREAM_KEY,
                "responses": n.startswith("s-native"),
            }
            for n, (k, _) in sims.items()
        ],
        "models": [
            {"name": "m-openai", "targets": [{"provider": "openai", "model": "gpt-4o-mini"}]},
            {
                "name": "m-anthropic",
                "targets": [{"provider": "anthropic", "model": "claude-sonnet-4-5"}],
            },
            {"name": "m-gemini", "targets": [{"provider": "gemini", "model": "gemini-2.5-flash"}]},
            {"name": "m-reason", "targets": [{"provider": "openai", "model": "o4-mini"}]},
            {"name": "m-cut", "targets": [{"provider": "cut", "model": "gpt-4o-mini"}]},
            {"name": "m-long", "targets": [{"provider": "long", "model": "gpt-4o-mini"}]},
            {
                "name": "m-long-ant",
                "targets": [{"provider": "long-ant", "model": "claude-sonnet-4-5"}],
            },
            {"name": "m-native", "targets": [{"provider": "native", "model": "gpt-4o-mini"}]},
            {"name": "m-native-reason", "targets": [{"provider": "native", "model": "o4-mini"}]},
            {
                "name": "m-native-cut",
                "targets": [{"provider": "native-cut", "model": "gpt-4o-mini"}],
            },
            {
                "name": "m-native-failover",
                "targets": [
                    {"provider": "native-down", "model": "gpt-4o-mini"},
                    {"provider": "openai", "model": "gpt-4o-mini"},
                ],
            },
            {
                "name": "m-failover",
                "targets": [
                    {"provider": "down", "model": "gpt-4o-mini"},
                    {"provider": "anthropic", "model": "claude-sonnet-4-5"},
                ],
            },
        ],
        "prices": [
            {"provider": p, "model": m, **PRICE}
            for p, m in [("openai", "o4-mini"), ("native", "o4-mini"), ("native", "gpt-4o-mini")]
        ],
        "keys": [{"name": "app", "key": KEY}, {"name": "other", "key": OTHER_KEY}],
    }


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    ledger = tmp_path_factory.mktemp("responses") / "ledger.db"
    s = Stack(stack_doc(f"sqlite:///{ledger}")).start()
    yield s
    s.stop()


@pytest.fixture(scope="session")
def client(stack: Stack) -> Iterator[openai.OpenAI]:
    c = openai.OpenAI(base_url=stack.url + "/v1", api_key=KEY, max_retries=0)
    yield c
    c.close()


@pytest.fixture(scope="session")
def other(stack: Stack) -> Iterator[openai.OpenAI]:
    c = openai.OpenAI(base_url=stack.url + "/v1", api_key=OTHER_KEY, max_retries=0)
    yield c
    c.close()


def ledger_rows(stack: Stack) -> dict[str, dict[str, Any]]:
    """Every request row of the stack's ledger, by request id, as the usage export gives it."""
    stack.flush()
    out = io.StringIO()
    export(stack.config.raw.storage.ledger, "jsonl", None, out)
    return {r["request_id"]: r for r in map(json.loads, out.getvalue().splitlines())}

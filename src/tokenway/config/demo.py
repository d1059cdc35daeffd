"""The embedded demo: what `tokenway serve` runs with no config.

Three simulated providers on loopback (one per wire protocol), models in front of them, a
SQLite ledger under ./tokenway-data/, in-memory state and a fixed demo key, so that a newcomer
can point an SDK at it with no network and no set-up.
"""

from __future__ import annotations

from typing import Any

from tokenway.config.load import Config, parse_config

DEMO_KEY = "sk-tokenway-demo"
DEMO_ADMIN_KEY = "sk-tokenway-demo-admin"


def demo_document(listen: str = "127.0.0.1:4141") -> dict[str, Any]:
    """The demo config as a plain document (also what `tokenway config demo` prints)."""
    return {
        "listen": listen,
        "admin_key": DEMO_ADMIN_KEY,
        "storage": {"ledger": "sqlite:///tokenway-data/ledger.db", "state": "memory"},
        "sim": [
            {"name": "sim-openai", "kind": "openai"},
            {"name": "sim-anthropic", "kind": "anthropic"},
            {"name": "sim-gemini", "kind": "gemini"},
        ],
        "providers": [
            {"name": "openai", "kind": "openai", "base_url": "sim://sim-openai", "region": "us"},
            {
                "name": "anthropic",
                "kind": "anthropic",
                "base_url": "sim://sim-anthropic",
                "region": "us",
            },
            {"name": "gemini", "kind": "gemini", "base_url": "sim://sim-gemini", "region": "us"},
        ],
        "models": [
            {
                "name": "demo-chat",
                "targets": [
                    {"provider": "openai", "model": "gpt-4o-mini"},
                    {"provider": "anthropic", "model": "claude-haiku-4-5"},
                ],
            },
            {"name": "gpt-4o-mini", "targets": [{"provider": "openai", "model": "gpt-4o-mini"}]},
            {
                "name": "claude-sonnet-4-6",
                "targets": [{"provider": "anthropic", "model": "claude-sonnet-4-6"}],
            },
            {
                "name": "gemini-2.5-flash",
                "targets": [{"provider": "gemini", "model": "gemini-2.5-flash"}],
            },
            {
                "name": "text-embedding-3-small",
                "kind": "embedding",
                "targets": [{"provider": "openai", "model": "text-embedding-3-small"}],
            },
        ],
        "keys": [{"name": "demo", "key": DEMO_KEY}],
    }


def demo_config(listen: str = "127.0.0.1:4141") -> Config:
    """The validated demo config."""
    return parse_config(demo_document(listen), env={}, source="<demo>")

"""A gateway in front of simulated providers for the Batch API tests, and helpers that drive
it with the official `openai` SDK as an application would."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.e2e.stack import Stack

KEY = "sk-batch-app"
OTHER_KEY = "sk-batch-other"
BROKE_KEY = "sk-batch-broke"
FAST = {"ttft_ms": 1, "tokens_per_s": 5000, "output_tokens": 12}
SLOW = {"ttft_ms": 300, "tokens_per_s": 5000, "output_tokens": 12}
TERMINAL = ("completed", "failed", "cancelled", "expired")


def stack_doc(ledger: Path) -> dict[str, Any]:
    return {
        "storage": {"ledger": f"sqlite:///{ledger}"},
        "sim": [
            {"name": "s-openai", "kind": "openai", "scenario": FAST},
            {"name": "s-slow", "kind": "openai", "scenario": SLOW},
            {
                "name": "s-broken",
                "kind": "openai",
                "scenario": {**FAST, "faults": [{"kind": "status", "status": 503}]},
            },
        ],
        "providers": [
            {"name": "openai", "kind": "openai", "base_url": "sim://s-openai"},
            {"name": "slow", "kind": "openai", "base_url": "sim://s-slow"},
            {"name": "broken", "kind": "openai", "base_url": "sim://s-broken"},
        ],
        "models": [
            {"name": "m-chat", "targets": [{"provider": "openai", "model": "gpt-4o-mini"}]},
            {"name": "m-slow", "targets": [{"provider": "slow", "model": "gpt-4o-mini"}]},
            {"name": "m-dead", "targets": [{"provider": "broken", "model": "gpt-4o-mini"}]},
            {
                "name": "e-embed",
                "kind": "embedding",
                "targets": [{"provider": "openai", "model": "text-embedding-3-small"}],
            },
        ],
        "prices": [
            {
                "provider": p,
                "model": "gpt-4o-mini",
                "input": 0.15,
                "output": 0.6,
                "multipliers": {"batch": 0.5},
            }
            for p in ("openai", "slow", "broken")
        ],
        "keys": [
            {"name": "app", "key": KEY},
            {"name": "other", "key": OTHER_KEY},
            {"name": "broke", "key": BROKE_KEY, "budget_usd": 0.000001},
        ],
        "batch": {"concurrency": 2},
    }


def module_stack(doc: Callable[[Path], dict[str, Any]], name: str) -> Any:
    """A module-scoped `stack` fixture: a gateway on the config `doc(ledger path)` gives, in
    front of its simulated providers, stopped after the module. The `client` and `other`
    fixtures below use whichever `stack` the test module defines."""

    @pytest.fixture(scope="module")
    def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
        s = Stack(doc(tmp_path_factory.mktemp(name) / "ledger.db")).start()
        yield s
        s.stop()

    return stack


stack = module_stack(stack_doc, "batch")


@pytest.fixture(scope="module")
def client(stack: Stack) -> Iterator[openai.OpenAI]:
    c = openai.OpenAI(base_url=stack.url + "/v1", api_key=KEY, max_retries=0)
    yield c
    c.close()


@pytest.fixture(scope="module")
def other(stack: Stack) -> Iterator[openai.OpenAI]:
    c = openai.OpenAI(base_url=stack.url + "/v1", api_key=OTHER_KEY, max_retries=0)
    yield c
    c.close()


def chat_line(custom_id: str, text: str, model: str = "m-chat", **extra: Any) -> dict[str, Any]:
    body = {"model": model, "messages": [{"role": "user", "content": text}], **extra}
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}


def jsonl(lines: list[Any]) -> bytes:
    return "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines).encode()


def upload(client: openai.OpenAI, lines: list[Any]) -> str:
    return client.files.create(file=("input.jsonl", jsonl(lines)), purpose="batch").id


def wait_done(client: openai.OpenAI, batch_id: str, timeout: float = 120.0) -> Any:
    """Poll the batch with the SDK until it reaches a terminal status."""
    end = time.monotonic() + timeout
    while True:
        batch = client.batches.retrieve(batch_id)
        if batch.status in TERMINAL:
            return batch
        assert time.monotonic() < end, f"batch still {batch.status} after {timeout}s"
        time.sleep(0.1)


def records(client: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    return [json.loads(x) for x in client.files.content(file_id).text.splitlines()]

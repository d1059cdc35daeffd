"""Work that can wait goes to the cheapest capacity: a model whose first target is dear serves
interactive requests there, while its batch lines and async tasks go to the cheap second
target (`routing.deferred_policy: cost`, the default)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx2 as httpx
import openai

from tests.e2e.stack import Stack
from tokenway.accounting.ledger import read_requests

from .conftest import FAST, KEY, chat_line, module_stack, upload, wait_done
from .test_async import submit, wait_task

MODEL = "m-two"


def _doc(ledger: Path) -> dict[str, Any]:
    return {
        "storage": {"ledger": f"sqlite:///{ledger}"},
        "sim": [
            {"name": "s-dear", "kind": "openai", "scenario": FAST},
            {"name": "s-cheap", "kind": "openai", "scenario": FAST},
        ],
        "providers": [
            {"name": "dear", "kind": "openai", "base_url": "sim://s-dear"},
            {"name": "cheap", "kind": "openai", "base_url": "sim://s-cheap"},
        ],
        "models": [
            {
                "name": MODEL,
                "targets": [
                    {"provider": "dear", "model": "gpt-4o-mini"},
                    {"provider": "cheap", "model": "gpt-4o-mini"},
                ],
            }
        ],
        "prices": [
            {"provider": "dear", "model": "gpt-4o-mini", "input": 5.0, "output": 15.0},
            {"provider": "cheap", "model": "gpt-4o-mini", "input": 0.15, "output": 0.6},
        ],
        "keys": [{"name": "app", "key": KEY}],
        "batch": {"concurrency": 2},
    }


stack = module_stack(_doc, "deferred")


def providers_by_mode(stack: Stack) -> dict[str, set[str]]:
    stack.flush()
    out: dict[str, set[str]] = {}
    for row in read_requests(stack.config.raw.storage.ledger):
        out.setdefault(row["mode"], set()).add(row["provider"])
    return out


def test_interactive_follows_priority_while_batch_and_async_take_the_cheapest(
    stack: Stack, client: openai.OpenAI
) -> None:
    msg = [{"role": "user", "content": "hello"}]
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=msg)
    assert raw.headers["x-tokenway-provider"] == "dear"

    lines = [chat_line(f"c{i}", f"line {i}", model=MODEL) for i in range(4)]
    batch = client.batches.create(
        input_file_id=upload(client, lines),
        endpoint="/v1/chat/completions",
        completion_window="24h",
    )
    assert wait_done(client, batch.id).status == "completed"

    resp: httpx.Response = submit(client, {"model": MODEL, "messages": msg})
    assert resp.status_code == 202
    assert wait_task(client, resp.json()["id"])["status"] == "completed"

    seen = providers_by_mode(stack)
    assert seen == {"realtime": {"dear"}, "batch": {"cheap"}, "async": {"cheap"}}

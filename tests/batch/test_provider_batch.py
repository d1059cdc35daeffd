"""A batch whose model's first target is a provider with `batch_api: true` is handed to that
provider's own Batch API: the simulated provider runs the lines (no chat completion reaches
it), the client gets its output file as usual, and the ledger rows are mode `batch` costed at
the catalog's batch price. When the upstream batch cannot be created or fails, the lines run
in-process as any batch's do, at the normal price."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.e2e.stack import Stack
from tokenway.accounting.ledger import read_attempts, read_requests
from tokenway.accounting.prices import PriceBook
from tokenway.batch.ids import line_request_id
from tokenway.domain.types import Usage

from .conftest import FAST, KEY, chat_line, module_stack, records, upload, wait_done

CHAT = "/v1/chat/completions"
# no `prices` entry: the built-in catalog prices gpt-5-mini and lists its batch price
PROVIDER_MODEL = "gpt-5-mini"
SIMS: dict[str, dict[str, Any]] = {
    "up": {},
    "refusing": {"batch_fault": "refuse"},
    "failing": {"batch_fault": "fail"},
    "resumed": {"batch_line_ms": 150.0},
}


def _doc(ledger: Path) -> dict[str, Any]:
    return {
        "storage": {"ledger": f"sqlite:///{ledger}"},
        "sim": [
            {"name": f"s-{name}", "kind": "openai", "scenario": {**FAST, **extra}}
            for name, extra in SIMS.items()
        ],
        "providers": [
            {"name": name, "kind": "openai", "base_url": f"sim://s-{name}", "batch_api": True}
            for name in SIMS
        ],
        "models": [
            {"name": f"m-{name}", "targets": [{"provider": name, "model": PROVIDER_MODEL}]}
            for name in SIMS
        ],
        "keys": [{"name": "app", "key": KEY}],
        "batch": {"upstream_poll_s": 0.05},
    }


stack = module_stack(_doc, "provider-batch")


def _paths(stack: Stack, name: str) -> list[str]:
    return [r.path for r in stack.sims[f"s-{name}"].received]


def _run(stack: Stack, name: str, n: int) -> tuple[Any, list[dict[str, Any]]]:
    with openai.OpenAI(base_url=stack.url + "/v1", api_key=KEY, max_retries=0) as client:
        lines = [
            chat_line(f"c{i}", f"tell me about {name} {i}", model=f"m-{name}") for i in range(n)
        ]
        batch = client.batches.create(
            input_file_id=upload(client, lines), endpoint=CHAT, completion_window="24h"
        )
        done = wait_done(client, batch.id, timeout=60)
        return done, records(client, done.output_file_id)


def _submit(stack: Stack, name: str, n: int) -> str:
    with openai.OpenAI(base_url=stack.url + "/v1", api_key=KEY, max_retries=0) as client:
        lines = [chat_line(f"c{i}", f"about {name} {i}", model=f"m-{name}") for i in range(n)]
        return client.batches.create(
            input_file_id=upload(client, lines), endpoint=CHAT, completion_window="24h"
        ).id


def _rows(stack: Stack, batch_id: str, n: int) -> list[tuple[dict[str, Any], Usage]]:
    stack.flush()
    url = stack.config.raw.storage.ledger
    wanted = {line_request_id(batch_id, f"c{i}") for i in range(n)}
    out = []
    for row in read_requests(url):
        if row["request_id"] in wanted:
            (attempt,) = read_attempts(url, row["request_id"])
            assert row["cost_usd"] == attempt["cost_usd"]
            usage = Usage(
                input_tokens=attempt["input_tokens"],
                cache_read_tokens=attempt["cache_read_tokens"],
                output_tokens=attempt["output_tokens"],
                reasoning_tokens=attempt["reasoning_tokens"],
                service_tier=attempt["service_tier"],
            )
            out.append((row, usage))
    assert len(out) == n
    return out


def test_a_batch_runs_on_the_providers_batch_api(stack: Stack) -> None:
    done, outputs = _run(stack, "up", 3)
    assert done.status == "completed"
    assert done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed) == (3, 3)
    assert done.request_counts.failed == 0 and done.error_file_id is None
    assert sorted(r["custom_id"] for r in outputs) == ["c0", "c1", "c2"]
    for record in outputs:
        assert record["response"]["status_code"] == 200
        assert record["response"]["body"]["model"] == "m-up"
        assert record["response"]["body"]["choices"][0]["message"]["content"]
    paths = _paths(stack, "up")
    assert CHAT not in paths
    assert "/v1/files" in paths and "/v1/batches" in paths
    assert stack.sims["s-up"].wire.batches.lines_run == 3
    catalog = PriceBook([])
    for row, usage in _rows(stack, done.id, 3):
        assert row["mode"] == "batch" and row["status"] == 200
        assert row["provider"] == "up" and row["provider_model"] == PROVIDER_MODEL
        assert usage.input_tokens > 0 and usage.output_tokens > 0
        at = datetime.fromtimestamp(row["ts"], UTC)
        batch_price = catalog.cost("openai", PROVIDER_MODEL, usage, at, mode="batch")
        assert row["cost_usd"] == batch_price > 0
        assert batch_price < catalog.cost("openai", PROVIDER_MODEL, usage, at)
        assert row["revenue_usd"] == row["cost_usd"]


@pytest.mark.parametrize("name", ["refusing", "failing"])
def test_lines_run_here_when_the_upstream_batch_fails(stack: Stack, name: str) -> None:
    done, outputs = _run(stack, name, 2)
    assert done.status == "completed"
    assert done.request_counts is not None and done.request_counts.completed == 2
    assert sorted(r["custom_id"] for r in outputs) == ["c0", "c1"]
    paths = _paths(stack, name)
    assert "/v1/batches" in paths
    assert paths.count(CHAT) == 2
    catalog = PriceBook([])
    for row, usage in _rows(stack, done.id, 2):
        assert row["mode"] == "batch" and row["status"] == 200
        at = datetime.fromtimestamp(row["ts"], UTC)
        assert row["cost_usd"] == catalog.cost("openai", PROVIDER_MODEL, usage, at) > 0


def test_a_replica_that_stops_mid_batch_is_resumed_on_the_same_upstream_batch(
    stack: Stack,
) -> None:
    batch_id = _submit(stack, "resumed", 3)
    end = time.monotonic() + 30
    while "/v1/batches" not in _paths(stack, "resumed"):
        assert time.monotonic() < end, "the batch was never handed off"
        time.sleep(0.02)
    # Stop the hand-off as a dying replica would: the upstream batch goes on, and the lease
    # (released here rather than lapsed, to keep the test short) is taken again.
    assert stack._server is not None
    stack.run(stack._server.config.app.jobs.runner.handoff.close())
    with openai.OpenAI(base_url=stack.url + "/v1", api_key=KEY, max_retries=0) as client:
        done = wait_done(client, batch_id, timeout=60)
        assert done.status == "completed"
        assert done.request_counts is not None and done.request_counts.completed == 3
        assert len(records(client, done.output_file_id)) == 3
    paths = _paths(stack, "resumed")
    assert paths.count("/v1/files") == 1 and paths.count("/v1/batches") == 1
    assert CHAT not in paths
    assert stack.sims["s-resumed"].wire.batches.lines_run == 3
    assert len(_rows(stack, batch_id, 3)) == 3

"""A batch line that tokenway runs itself goes to the provider's normal endpoint, which bills
its normal price: the ledger row is mode `batch` but costed like a realtime request, unless the
operator's config gives the mode a price of its own (`multipliers: {batch: ...}`)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import openai

from tests.e2e.stack import Stack
from tokenway.accounting.ledger import read_attempts, read_requests
from tokenway.accounting.prices import PriceBook
from tokenway.domain.types import Usage

from .conftest import FAST, KEY, chat_line, module_stack, upload, wait_done

MODEL = "m-catalog"


def _doc(ledger: Path) -> dict[str, Any]:
    # no `prices` entry: the built-in catalog prices gpt-5-mini (and lists a batch price)
    return {
        "storage": {"ledger": f"sqlite:///{ledger}"},
        "sim": [{"name": "s-openai", "kind": "openai", "scenario": FAST}],
        "providers": [{"name": "openai", "kind": "openai", "base_url": "sim://s-openai"}],
        "models": [{"name": MODEL, "targets": [{"provider": "openai", "model": "gpt-5-mini"}]}],
        "keys": [{"name": "app", "key": KEY}],
    }


stack = module_stack(_doc, "pricing")


def test_lines_are_billed_at_the_providers_normal_price(stack: Stack) -> None:
    with openai.OpenAI(base_url=stack.url + "/v1", api_key=KEY, max_retries=0) as client:
        lines = [chat_line(f"c{i}", f"line {i}", model=MODEL) for i in range(3)]
        batch = client.batches.create(
            input_file_id=upload(client, lines),
            endpoint="/v1/chat/completions",
            completion_window="24h",
        )
        assert wait_done(client, batch.id).status == "completed"
    stack.flush()
    url = stack.config.raw.storage.ledger
    rows = [r for r in read_requests(url) if r["mode"] == "batch"]
    assert len(rows) == 3
    catalog = PriceBook([])
    for row in rows:
        (attempt,) = read_attempts(url, row["request_id"])
        usage = Usage(
            input_tokens=attempt["input_tokens"],
            cache_read_tokens=attempt["cache_read_tokens"],
            output_tokens=attempt["output_tokens"],
            reasoning_tokens=attempt["reasoning_tokens"],
            service_tier=attempt["service_tier"],
        )
        at = datetime.fromtimestamp(row["ts"], UTC)
        normal = catalog.cost("openai", "gpt-5-mini", usage, at)
        assert normal > 0
        assert row["cost_usd"] == attempt["cost_usd"] == normal
        assert normal != catalog.cost("openai", "gpt-5-mini", usage, at, mode="batch")

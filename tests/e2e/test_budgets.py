"""Hard budgets: admission reserves a request's worst case, so concurrent requests cannot
overspend by more than one request's worst case; refusals are 429s the SDKs do not retry."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import anthropic
import openai
import pytest

from tokenway.accounting.export import export
from tokenway.translate.openai_chat import parse_request

from .conftest import clients_for, close_clients
from .stack import Stack

BUDGET = Decimal("0.00005")
MSG = [{"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def bs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    doc: dict[str, Any] = {
        "storage": {"ledger": f"sqlite:///{tmp_path_factory.mktemp('b') / 'ledger.db'}"},
        "sim": [{"name": "s", "kind": "openai", "scenario": {"ttft_ms": 5, "output_tokens": 12}}],
        "providers": [{"name": "openai", "kind": "openai", "base_url": "sim://s"}],
        "models": [{"name": "m", "targets": [{"provider": "openai", "model": "gpt-4o-mini"}]}],
        "prices": [{"provider": "openai", "model": "gpt-4o-mini", "input": 0.15, "output": 0.6}],
        "keys": [
            {"name": "crowd", "key": "sk-crowd", "budget_usd": float(BUDGET)},
            {"name": "solo", "key": "sk-solo", "budget_usd": float(BUDGET)},
        ],
    }
    s = Stack(doc).start()
    yield s
    close_clients(s)
    s.stop()


def spent(stack: Stack, key: str) -> Decimal:
    stack.flush()
    out = io.StringIO()
    export(stack.config.raw.storage.ledger, "jsonl", None, out)
    return sum(
        (
            Decimal(r["cost_usd"])
            for r in map(json.loads, out.getvalue().splitlines())
            if r["key"] == key
        ),
        Decimal(0),
    )


def test_concurrent_requests_overspend_by_at_most_one_worst_case(bs: Stack) -> None:
    client = clients_for(bs).openai("sk-crowd")

    def one(_: int) -> str:
        try:
            client.chat.completions.create(model="m", messages=MSG, max_tokens=20)
            return "ok"
        except openai.RateLimitError as e:
            assert e.body["code"] == "insufficient_quota"  # type: ignore[index]
            assert e.response.headers["x-should-retry"] == "false"
            return "refused"

    with ThreadPoolExecutor(16) as pool:
        outcomes = list(pool.map(one, range(40)))
    assert outcomes.count("refused") > 0 and outcomes.count("ok") > 0
    prompt = bs.rt.estimate_prompt(parse_request({"model": "m", "messages": MSG, "max_tokens": 20}))
    worst = bs.rt.worst_case_usd(bs.rt.targets["m"], prompt, 20)
    assert spent(bs, "crowd") <= BUDGET + worst


def test_both_sdks_see_a_non_retryable_429(bs: Stack) -> None:
    oai = clients_for(bs).openai("sk-solo")
    with pytest.raises(openai.RateLimitError):
        for _ in range(50):
            oai.chat.completions.create(model="m", messages=MSG, max_tokens=20)
    with pytest.raises(anthropic.RateLimitError) as e:
        clients_for(bs).anthropic("sk-solo").messages.create(model="m", max_tokens=20, messages=MSG)
    assert "budget" in str(e.value) and "sk-solo" not in str(e.value)

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
        "models": [
            {"name": "m", "targets": [{"provider": "openai", "model": "gpt-4o-mini"}]},
            {
                "name": "e",
                "kind": "embedding",
                "targets": [{"provider": "openai", "model": "text-embedding-3-small"}],
            },
        ],
        "prices": [
            {"provider": "openai", "model": "gpt-4o-mini", "input": 0.15, "output": 0.6},
            {"provider": "openai", "model": "text-embedding-3-small", "input": 0.02},
        ],
        "teams": [{"name": "squad", "budget_usd": float(BUDGET)}],
        "keys": [
            {"name": "crowd", "key": "sk-crowd", "budget_usd": float(BUDGET)},
            {"name": "solo", "key": "sk-solo", "budget_usd": float(BUDGET)},
            {"name": "one", "key": "sk-one", "team": "squad"},
            {"name": "two", "key": "sk-two", "team": "squad"},
            {"name": "shop", "key": "sk-shop", "end_user_budget_usd": float(BUDGET)},
            {"name": "vec", "key": "sk-vec", "budget_usd": 0.000001},
        ],
    }
    s = Stack(doc).start()
    yield s
    close_clients(s)
    s.stop()


def rows(stack: Stack) -> list[dict[str, Any]]:
    stack.flush()
    out = io.StringIO()
    export(stack.config.raw.storage.ledger, "jsonl", None, out)
    return list(map(json.loads, out.getvalue().splitlines()))


def spent(stack: Stack, **match: str) -> Decimal:
    return sum(
        (Decimal(r["cost_usd"]) for r in rows(stack) if all(r[k] == v for k, v in match.items())),
        Decimal(0),
    )


def worst_case(stack: Stack) -> Decimal:
    prompt = stack.rt.estimate_prompt(
        parse_request({"model": "m", "messages": MSG, "max_tokens": 20})
    )
    return stack.rt.worst_case_usd(stack.rt.targets["m"], prompt, 20)


def until_refused(call: Any, limit: int = 60) -> int:
    """Call until the budget refuses; returns how many calls were served."""
    for served in range(limit):
        try:
            call()
        except openai.RateLimitError as e:
            assert e.body["code"] == "insufficient_quota"  # type: ignore[index]
            return served
    raise AssertionError("the budget never refused")


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
    assert spent(bs, key="crowd") <= BUDGET + worst_case(bs)


def test_both_sdks_see_a_non_retryable_429(bs: Stack) -> None:
    oai = clients_for(bs).openai("sk-solo")
    with pytest.raises(openai.RateLimitError):
        for _ in range(50):
            oai.chat.completions.create(model="m", messages=MSG, max_tokens=20)
    with pytest.raises(anthropic.RateLimitError) as e:
        clients_for(bs).anthropic("sk-solo").messages.create(model="m", max_tokens=20, messages=MSG)
    assert "budget" in str(e.value) and "sk-solo" not in str(e.value)


def test_team_budget_is_shared_by_its_keys(bs: Stack) -> None:
    c = clients_for(bs)
    turns = iter(["sk-one", "sk-two"] * 40)
    until_refused(
        lambda: c.openai(next(turns)).chat.completions.create(
            model="m", messages=MSG, max_tokens=20
        )
    )
    for name in ("sk-one", "sk-two"):  # the team's money is gone for both of its keys
        with pytest.raises(openai.RateLimitError) as e:
            c.openai(name).chat.completions.create(model="m", messages=MSG, max_tokens=20)
        assert "Team 'squad'" in str(e.value)
    assert spent(bs, team="squad") <= BUDGET + worst_case(bs)
    assert spent(bs, key="one") > 0 and spent(bs, key="two") > 0


def test_end_user_budgets_apply_per_user(bs: Stack) -> None:
    c = clients_for(bs)

    def ask(user: str) -> None:
        c.openai("sk-shop").chat.completions.create(
            model="m", messages=MSG, max_tokens=20, user=user
        )

    served = until_refused(lambda: ask("alice"))
    assert served > 0
    ask("bob")  # another end user of the same key still has money
    with pytest.raises(anthropic.RateLimitError) as e:
        c.anthropic("sk-shop").messages.create(
            model="m", max_tokens=20, messages=MSG, metadata={"user_id": "alice"}
        )
    assert "End user 'alice'" in str(e.value)
    assert spent(bs, key="shop", end_user="alice") <= BUDGET + worst_case(bs)


def test_embeddings_are_budgeted(bs: Stack) -> None:
    client = clients_for(bs).openai("sk-vec")
    served = until_refused(lambda: client.embeddings.create(model="e", input=["a b c d"] * 4))
    assert served > 0
    assert 0 < spent(bs, key="vec") <= Decimal("0.000001") + Decimal("0.00000032")

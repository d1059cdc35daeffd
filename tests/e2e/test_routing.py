"""Routing under SLA against real simulated providers: a primary killed under load, a provider
out of rate-limit headroom, every provider down under a retry budget, task tiers and residency.
Counts and outcomes are asserted here; latency figures belong to bench/."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tokenway.accounting.ledger import read_attempts, read_requests

from .conftest import KEY, clients_for, close_clients
from .stack import Stack

FAST = {"ttft_ms": 2, "tokens_per_s": 20000, "output_tokens": 8}
CN_KEY = "sk-test-cn-only"
VIP_KEY = "sk-test-vip"
BULK_KEY = "sk-test-bulk"
MSG = [{"role": "user", "content": "hello"}]


def doc(ledger: Path) -> dict[str, Any]:
    sims: dict[str, dict[str, Any]] = {
        "primary": FAST,
        "secondary": FAST,
        "limited": {**FAST, "rpm": 30},
        "spare": FAST,
        "down-a": {**FAST, "faults": [{"kind": "status", "status": 503}]},
        "down-b": {**FAST, "faults": [{"kind": "status", "status": 503}]},
        "cheap": FAST,
        "strong": FAST,
        "us": FAST,
        "cn": FAST,
        "tail": {**FAST, "ttft_ms": 20, "slow_rate": 0.3, "slow_factor": 25, "seed": 7},
        "backup": {**FAST, "ttft_ms": 20},
        "busy": {**FAST, "ttft_ms": 300},
    }
    regions = {"us": "us", "cn": "cn"}
    providers = [
        {"name": n, "kind": "openai", "base_url": f"sim://{n}", "region": regions.get(n)}
        for n in sims
    ]

    def t(*names: str) -> list[dict[str, str]]:
        return [{"provider": n, "model": "gpt-4o-mini"} for n in names]

    return {
        "storage": {"ledger": f"sqlite:///{ledger}"},
        "admin_key": "sk-test-admin",
        "sim": [{"name": n, "kind": "openai", "scenario": s} for n, s in sims.items()],
        "providers": providers,
        "models": [
            {"name": "core", "targets": t("primary", "secondary")},
            {"name": "spill", "targets": t("limited", "spare")},
            {"name": "down", "targets": t("down-a", "down-b")},
            {
                "name": "tiered",
                "targets": t("cheap"),
                "tasks": {"high-value": {"targets": t("strong")}},
            },
            {"name": "global", "targets": t("us", "cn")},
            {"name": "hedged", "targets": t("tail", "backup"), "hedge": {"after_ms": 120}},
            {
                "name": "fit",
                "targets": [
                    {"provider": "cheap", "model": "small", "context_window": 200},
                    {"provider": "strong", "model": "big", "context_window": 100000},
                ],
            },
            {
                "name": "tooled",
                "targets": [
                    {"provider": "cheap", "model": "no-tools", "capabilities": ["json"]},
                    {"provider": "strong", "model": "with-tools"},
                ],
            },
            {
                "name": "scarce",
                "targets": t("busy"),
                "capacity": {"max_in_flight": 4, "queue": 2, "max_wait_ms": 200},
            },
        ],
        "prices": [
            {"provider": n, "model": "gpt-4o-mini", "input": 0.15, "output": 0.6}
            for n in ("tail", "backup")
        ],
        "routing": {"hedge_ratio": 0.5},
        "keys": [
            {"name": "app", "key": KEY},
            {"name": "cn-only", "key": CN_KEY, "regions": ["cn"]},
            {"name": "vip", "key": VIP_KEY, "priority": "high"},
            {"name": "bulk", "key": BULK_KEY, "priority": "low"},
        ],
    }


@pytest.fixture(scope="module")
def rs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(doc(tmp_path_factory.mktemp("routing") / "ledger.db")).start()
    yield s
    close_clients(s)
    s.stop()


async def fire(
    stack: Stack, model: str, n: int, rate: float, headers: dict[str, str] | None = None
) -> list[tuple[float, float, BaseException | None]]:
    """`n` requests at `rate` per second from the official async SDK (no SDK retries);
    returns (start, seconds, error) per request."""
    client = openai.AsyncOpenAI(base_url=stack.url + "/v1", api_key=KEY, max_retries=0)
    out: list[tuple[float, float, BaseException | None]] = []

    async def one() -> None:
        t0 = time.perf_counter()
        try:
            await client.chat.completions.create(
                model=model, messages=MSG, max_tokens=8, extra_headers=headers
            )
            out.append((t0, time.perf_counter() - t0, None))
        except openai.APIError as exc:
            out.append((t0, time.perf_counter() - t0, exc))

    tasks = []
    start = time.perf_counter()
    for i in range(n):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one()))
    await asyncio.gather(*tasks)
    await client.close()
    return out


def attempts_by_provider(stack: Stack) -> dict[str, list[dict[str, Any]]]:
    stack.flush()
    by: dict[str, list[dict[str, Any]]] = {}
    for a in read_attempts(stack.config.raw.storage.ledger):
        by.setdefault(a["provider"], []).append(a)
    return by


def test_primary_killed_under_load_loses_no_request(rs: Stack) -> None:
    async def scenario() -> list[tuple[float, float, BaseException | None]]:
        load = asyncio.create_task(fire(rs, "core", 500, 200.0))
        # Kill once the retry budget's window holds a steady flow of requests (a gateway that
        # has just started allows only the floor of re-attempts, by design).
        await asyncio.sleep(1.5)
        rs.run(rs.sims["primary"].close())
        return await load

    results = asyncio.run(scenario())
    by = attempts_by_provider(rs)
    assert [e for _, _, e in results if e is not None] == []
    failed = [a for a in by["primary"] if a["status"] != 200]
    assert failed, "the kill should have cost the primary some attempts"
    # the breaker ejected the dead primary: it was not tried for every later request
    assert len(failed) < 60
    assert len(by["secondary"]) > 100


def test_rate_limited_provider_is_spilled_from_once_learned(rs: Stack) -> None:
    results = asyncio.run(fire(rs, "spill", 90, 60.0))
    assert [e for _, _, e in results if e is not None] == []
    by = attempts_by_provider(rs)
    limited = by["limited"]
    served = [a for a in limited if a["status"] == 200]
    refused = [a for a in limited if a["status"] == 429]
    assert len(served) == 30  # the provider's whole minute of headroom was used
    # Its remaining-requests header taught the router to stop before collecting 429s.
    assert len(refused) <= 3
    assert len(by["spare"]) >= 57


def test_every_provider_down_stays_within_the_retry_budget(rs: Stack) -> None:
    before = sum(rs.sims[n].request_count for n in ("down-a", "down-b"))
    results = asyncio.run(fire(rs, "down", 60, 100.0, {"x-tokenway-timeout-ms": "2000"}))
    sent = sum(rs.sims[n].request_count for n in ("down-a", "down-b")) - before
    assert all(isinstance(e, openai.APIStatusError) and e.status_code == 503 for *_, e in results)
    assert all(seconds < 2.0 for _, seconds, _ in results)
    budget = rs.config.raw.routing.retry
    # first attempts are the requests themselves; re-attempts are capped by the budget
    assert sent <= len(results) * (1 + budget.ratio) + budget.floor
    # once both breakers are open, requests are refused without calling anyone
    assert sent < len(results)


def test_task_classes_use_only_their_tier(rs: Stack) -> None:
    c = clients_for(rs).openai()
    marks = {"high-value": "tier-strong", None: "tier-cheap"}
    for i in range(12):
        task = "high-value" if i % 3 == 0 else None
        c.chat.completions.create(
            model="tiered",
            messages=[{"role": "user", "content": f"{marks[task]} {i}"}],
            extra_headers={"x-tokenway-task": task} if task else None,
        )

    def seen(sim: str) -> set[str]:
        return {
            r.body["messages"][0]["content"].split()[0]
            for r in rs.sims[sim].received
            if isinstance(r.body, dict) and "messages" in r.body
        }

    assert seen("strong") == {"tier-strong"}
    assert seen("cheap") == {"tier-cheap"}
    rows = [r for r in read_requests(rs.config.raw.storage.ledger) if r["model"] == "tiered"]
    assert {r["task"] for r in rows} == {"high-value", None}


def test_residency_sends_no_byte_outside_the_allowed_regions(rs: Stack) -> None:
    us_before = rs.sims["us"].bytes_received
    c = clients_for(rs).openai(CN_KEY)
    for _ in range(6):
        c.chat.completions.create(model="global", messages=MSG)
    # even when the only allowed region fails, nothing spills to another region
    rs.run(rs.sims["cn"].close())
    with pytest.raises(openai.InternalServerError):
        c.chat.completions.create(model="global", messages=MSG)
    assert rs.sims["us"].bytes_received == us_before
    assert rs.sims["cn"].bytes_received > 0
    # a request may narrow its regions; naming none the model has is refused
    with pytest.raises(openai.PermissionDeniedError, match="regions"):
        clients_for(rs).openai().chat.completions.create(
            model="global", messages=MSG, extra_headers={"x-tokenway-regions": "eu"}
        )


def test_hedge_races_a_slow_first_attempt_and_both_are_costed(rs: Stack) -> None:
    c = clients_for(rs).openai()
    for i in range(30):
        stream = c.chat.completions.create(
            model="hedged", messages=[{"role": "user", "content": f"q{i}"}], stream=True
        )
        assert "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices)
    rs.flush()
    url = rs.config.raw.storage.ledger
    rows = {r["request_id"]: r for r in read_requests(url) if r["model"] == "hedged"}
    attempts: dict[str, list[dict[str, Any]]] = {}
    for a in read_attempts(url):
        if a["request_id"] in rows:
            attempts.setdefault(a["request_id"], []).append(a)
    hedged = {rid: a for rid, a in attempts.items() if len(a) > 1}
    assert hedged, "with 30% of first tokens 25x late, some requests must have been hedged"
    assert len(hedged) <= 0.5 * len(rows) + 1  # the hedge budget
    for rid, tries in hedged.items():
        flags = sorted(a["flag"] for a in tries)
        assert flags == ["HEDGE", "OK"], flags
        assert all(a["cost_usd"] > 0 for a in tries)  # the loser's prompt is billed too
        assert rows[rid]["cost_usd"] == sum(a["cost_usd"] for a in tries)
        winner = next(a for a in tries if a["flag"] == "OK")
        assert rows[rid]["provider"] == winner["provider"]


def test_scarce_capacity_sheds_low_priority_and_serves_high(rs: Stack) -> None:
    async def burst() -> dict[str, list[BaseException | None]]:
        out: dict[str, list[BaseException | None]] = {"vip": [], "bulk": []}
        clients = {
            name: openai.AsyncOpenAI(base_url=rs.url + "/v1", api_key=key, max_retries=0)
            for name, key in (("vip", VIP_KEY), ("bulk", BULK_KEY))
        }

        async def one(who: str) -> None:
            try:
                await clients[who].chat.completions.create(model="scarce", messages=MSG)
                out[who].append(None)
            except openai.APIStatusError as exc:
                out[who].append(exc)

        bulk = [asyncio.create_task(one("bulk")) for _ in range(8)]
        await asyncio.sleep(0.1)
        vip = [asyncio.create_task(one("vip")) for _ in range(4)]
        await asyncio.gather(*bulk, *vip)
        for c in clients.values():
            await c.close()
        return out

    out = asyncio.run(burst())
    assert out["vip"] == [None] * 4
    shed = [e for e in out["bulk"] if e is not None]
    assert shed and all(
        isinstance(e, openai.RateLimitError) and int(e.response.headers["retry-after"]) >= 1
        for e in shed
    )
    assert out["bulk"].count(None) >= 2  # low priority still gets its half of the slots


def test_context_window_and_capabilities_pick_a_target_that_can_serve(rs: Stack) -> None:
    c = clients_for(rs).openai()
    short = c.chat.completions.with_raw_response.create(model="fit", messages=MSG, max_tokens=20)
    assert short.headers["x-tokenway-model"] == "small"
    long_prompt = " ".join(f"word{i}" for i in range(400))
    long = c.chat.completions.with_raw_response.create(
        model="fit", messages=[{"role": "user", "content": long_prompt}], max_tokens=20
    )
    assert long.headers["x-tokenway-model"] == "big"  # too long for the small window
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(
            model="fit", messages=[{"role": "user", "content": long_prompt * 300}]
        )
    assert e.value.code == "context_length_exceeded"
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    plain = c.chat.completions.with_raw_response.create(model="tooled", messages=MSG)
    assert plain.headers["x-tokenway-model"] == "no-tools"
    tooled = c.chat.completions.with_raw_response.create(
        model="tooled",
        messages=MSG,
        tools=[tool],  # type: ignore[list-item]
    )
    assert tooled.headers["x-tokenway-model"] == "with-tools"


def test_admin_targets_shows_what_the_router_knows(rs: Stack) -> None:
    import httpx2 as httpx

    r = httpx.get(rs.url + "/admin/targets", headers={"authorization": "Bearer sk-test-admin"})
    assert r.status_code == 200, r.text
    by = {d["target"]: d for d in r.json()["data"]}
    assert by["secondary/gpt-4o-mini"]["samples"] > 0
    assert by["secondary/gpt-4o-mini"]["ttft_ms"] is not None
    assert by["cn/gpt-4o-mini"]["region"] == "cn"
    assert {"model": "tiered", "task": "high-value", "policy": "priority"} in by[
        "strong/gpt-4o-mini"
    ]["routes"]
    assert httpx.get(rs.url + "/admin/targets", headers={"x-api-key": KEY}).status_code == 403

"""The background work's Prometheus metrics, read from `/metrics` over HTTP while a real gateway
runs batches, async tasks and their webhooks: lines by outcome, lines in flight, batches and
tasks by final status, webhook attempts by outcome, and the runner's yields to interactive
traffic (a capacity queue with requests waiting, an event loop running late)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx2 as httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.stack import Stack
from tokenway.batch.store import JobStore
from tokenway.store import open_database

from .conftest import chat_line, module_stack, stack_doc, upload, wait_done
from .test_async import (
    ASYNC,
    CHAT,
    TIGHT_KEY,
    Receiver,
    spend_the_minute,
    submit,
    wait_task,
)

CHAT_LINES = {"endpoint": "/v1/chat/completions", "mode": "batch"}
TASK_LINES = {"endpoint": "/v1/chat/completions", "mode": "async"}
Scrape = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _doc(ledger: Path) -> dict[str, Any]:
    doc = stack_doc(ledger)
    # a provider slow enough that a capacity gate of one slot keeps interactive requests queued
    doc["sim"].append(
        {
            "name": "s-held",
            "kind": "openai",
            "scenario": {"ttft_ms": 800, "tokens_per_s": 5000, "output_tokens": 12},
        }
    )
    doc["providers"].append({"name": "held", "kind": "openai", "base_url": "sim://s-held"})
    doc["models"] += [
        {"name": "m-tight", "targets": [{"provider": "openai", "model": "gpt-4o-mini"}]},
        {
            "name": "m-cap",
            "targets": [{"provider": "held", "model": "gpt-4o-mini"}],
            "capacity": {"max_in_flight": 1, "queue": 16, "max_wait_ms": 30_000},
        },
    ]
    doc["keys"].append({"name": "tight", "key": TIGHT_KEY, "rpm": 1})
    doc["async"] = dict(ASYNC)
    return doc


stack = module_stack(_doc, "metrics")


@pytest.fixture(scope="module")
def tight(stack: Stack) -> Iterator[openai.OpenAI]:
    c = openai.OpenAI(base_url=stack.url + "/v1", api_key=TIGHT_KEY, max_retries=0)
    yield c
    c.close()


def scrape(stack: Stack) -> Scrape:
    """Every sample of `/metrics`, by name and labels."""
    resp = httpx.get(stack.url + "/metrics")
    assert resp.status_code == 200
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(resp.text)
        for s in family.samples
    }


def value(seen: Scrape, name: str, **labels: str) -> float:
    return seen.get((name, frozenset(labels.items())), 0.0)


def moved(before: Scrape, after: Scrape, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def wait_for(
    stack: Stack, check: Callable[[Scrape], bool], what: str, timeout: float = 30.0
) -> Scrape:
    """Scrape until `check` holds: a counter moves just after the object it counts is visible
    through the API (the runner counts an end once the store has committed it)."""
    end = time.monotonic() + timeout
    while True:
        seen = scrape(stack)
        if check(seen):
            return seen
        assert time.monotonic() < end, what
        time.sleep(0.05)


def lines(before: Scrape, after: Scrape, labels: dict[str, str]) -> dict[str, float]:
    return {
        outcome: moved(before, after, "tokenway_batch_lines_total", **labels, outcome=outcome)
        for outcome in ("ok", "error", "refused", "lost")
    }


def test_a_batch_counts_its_lines_by_outcome_and_its_end(
    stack: Stack, client: openai.OpenAI
) -> None:
    before = scrape(stack)
    rows = [chat_line(f"c{i}", f"say something about {i}") for i in range(4)]
    # the simulated provider refuses a tool_choice that names no tool: one line fails upstream
    rows[2]["body"]["tools"] = [
        {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
    ]
    rows[2]["body"]["tool_choice"] = {"type": "function", "function": {"name": "missing"}}
    batch = client.batches.create(
        input_file_id=upload(client, rows),
        endpoint="/v1/chat/completions",
        completion_window="24h",
    )
    assert wait_done(client, batch.id).status == "completed"

    def ended(seen: Scrape) -> bool:
        return (
            moved(before, seen, "tokenway_batches_ended_total", kind="batch", status="completed")
            == 1
        )

    after = wait_for(stack, ended, "the batch's end is not counted")
    assert lines(before, after, CHAT_LINES) == {"ok": 3, "error": 1, "refused": 0, "lost": 0}
    assert value(after, "tokenway_batch_lines_in_flight") == 0
    for status in ("failed", "cancelled", "expired"):
        assert (
            moved(before, after, "tokenway_batches_ended_total", kind="batch", status=status) == 0
        )


def test_tasks_count_their_ends_and_each_webhook_attempt(
    stack: Stack, client: openai.OpenAI
) -> None:
    before = scrape(stack)
    flaky, dead = Receiver(failures=1), Receiver(failures=99)
    stack.run(flaky.start())
    stack.run(dead.start())
    try:
        served = submit(client, CHAT, **{"x-tokenway-webhook": flaky.url}).json()
        failed = submit(
            client, {**CHAT, "model": "m-dead"}, **{"x-tokenway-webhook": dead.url}
        ).json()
        assert wait_task(client, served["id"])["status"] == "completed"
        assert wait_task(client, failed["id"])["status"] == "failed"

        def delivered(seen: Scrape) -> bool:
            done = moved(before, seen, "tokenway_webhook_deliveries_total", outcome="delivered")
            gone = moved(before, seen, "tokenway_webhook_deliveries_total", outcome="given_up")
            return done == 1 and gone == 1

        after = wait_for(stack, delivered, "the webhooks' attempts are not counted")
    finally:
        stack.run(flaky.stop())
        stack.run(dead.stop())
    # one failed attempt before the flaky receiver took it, two before the dead one's last
    assert moved(before, after, "tokenway_webhook_deliveries_total", outcome="failed") == 3
    assert len(flaky.got) == 2 and len(dead.got) == 3
    assert lines(before, after, TASK_LINES) == {"ok": 1, "error": 1, "refused": 0, "lost": 0}
    assert (
        moved(before, after, "tokenway_batches_ended_total", kind="async", status="completed") == 1
    )
    assert moved(before, after, "tokenway_batches_ended_total", kind="async", status="failed") == 1


def test_a_line_refused_for_now_then_lost_at_its_deadline_is_counted_so(
    stack: Stack, tight: openai.OpenAI
) -> None:
    spend_the_minute(tight)
    before = scrape(stack)
    task = submit(tight, {**CHAT, "model": "m-tight"}, **{"x-tokenway-deadline-s": "3"}).json()

    def refused(seen: Scrape) -> bool:
        return lines(before, seen, TASK_LINES)["refused"] >= 1

    wait_for(stack, refused, "the key's rate limit refused nothing", timeout=10)
    # As if a replica had sent the line and died before its result was stored: the store says
    # it was sent, and the task's deadline passes before anyone runs it again.
    store = JobStore(open_database(stack.config.raw.storage.ledger))
    try:
        end = time.monotonic() + 2
        while not store.db.execute(
            "UPDATE batch_lines SET sends = 1, first_sent = :t, last_sent = :t, "
            "prompt_tokens = 12, target = 'openai/gpt-4o-mini' "
            "WHERE batch_id = :id AND state = 'queued'",
            {"id": task["id"], "t": time.time()},
        ):
            assert time.monotonic() < end, "the line never went back to the queue"
            time.sleep(0.01)  # the runner holds it this instant
    finally:
        store.close()
    assert wait_task(tight, task["id"], timeout=30)["status"] == "expired"

    def ended(seen: Scrape) -> bool:
        return (
            moved(before, seen, "tokenway_batches_ended_total", kind="async", status="expired") == 1
        )

    after = wait_for(stack, ended, "the task's end is not counted")
    counted = lines(before, after, TASK_LINES)
    assert counted["lost"] == 1 and counted["ok"] == counted["error"] == 0


def test_the_runner_counts_skipping_a_model_whose_capacity_queue_is_busy(
    stack: Stack, client: openai.OpenAI
) -> None:
    before = scrape(stack)
    gate = stack.rt.gates["m-cap"]

    def interactive() -> None:
        client.chat.completions.create(model="m-cap", messages=[{"role": "user", "content": "hi"}])

    with ThreadPoolExecutor(4) as pool:
        calls = [pool.submit(interactive) for _ in range(4)]
        end = time.monotonic() + 10
        while gate.waiting == 0:
            assert time.monotonic() < end, "no interactive request queued"
            time.sleep(0.01)
        task = submit(client, {**CHAT, "model": "m-cap"}).json()

        def skipped(seen: Scrape) -> bool:
            return moved(before, seen, "tokenway_batch_yields_total", reason="capacity") >= 1

        wait_for(stack, skipped, "the runner did not yield to the queue", timeout=10)
        for call in calls:
            call.result(30)
    assert wait_task(client, task["id"])["status"] == "completed"


def test_the_runner_counts_narrowing_while_the_event_loop_lags(
    stack: Stack, client: openai.OpenAI
) -> None:
    before = scrape(stack)
    rows = [chat_line(f"s{i}", f"slow {i}", model="m-slow") for i in range(20)]
    batch = client.batches.create(
        input_file_id=upload(client, rows),
        endpoint="/v1/chat/completions",
        completion_window="24h",
    )
    most = 0.0
    end = time.monotonic() + 20
    while True:
        seen = scrape(stack)
        most = max(most, value(seen, "tokenway_batch_lines_in_flight"))
        if moved(before, seen, "tokenway_batch_yields_total", reason="lag") >= 1:
            break
        assert time.monotonic() < end, "the runner never narrowed"
        # hold the gateway's loop past `yield_lag_ms`, as CPU-bound work would
        stack.loop.call_soon_threadsafe(time.sleep, 0.1)
        time.sleep(0.2)
    assert wait_done(client, batch.id).status == "completed"
    after = wait_for(
        stack,
        lambda s: value(s, "tokenway_batch_lines_in_flight") == 0,
        "lines still counted in flight",
    )
    assert 1 <= most <= 2  # the config's batch.concurrency
    assert lines(before, after, CHAT_LINES)["ok"] == 20

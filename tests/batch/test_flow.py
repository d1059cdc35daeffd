"""The whole Batch API flow with the official SDK against a real gateway and simulated
providers: upload, create, poll, download the output and error files, and the ledger."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import openai
import pytest

from tests.e2e.stack import Stack
from tokenway.accounting.ledger import read_attempts, read_requests

from .conftest import BROKE_KEY, chat_line, records, upload, wait_done

MTOK = Decimal(1_000_000)
# the config's gpt-4o-mini price (0.15 in, 0.60 out per 1M) with its batch multiplier of 0.5
BATCH_IN, BATCH_OUT = Decimal("0.075"), Decimal("0.30")


def ledger_rows(stack: Stack, request_ids: set[str]) -> dict[str, dict[str, Any]]:
    stack.flush()
    url = stack.config.raw.storage.ledger
    return {r["request_id"]: r for r in read_requests(url) if r["request_id"] in request_ids}


def test_a_batch_completes_with_the_line_that_failed_upstream_in_the_error_file(
    stack: Stack, client: openai.OpenAI
) -> None:
    lines = [chat_line(f"c{i}", f"say something about {i}") for i in range(6)]
    # The simulated provider refuses a tool_choice that names no tool (400): a line whose
    # request passes the gateway and fails upstream.
    lines[3]["body"]["tools"] = [
        {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
    ]
    lines[3]["body"]["tool_choice"] = {"type": "function", "function": {"name": "missing"}}
    file_id = upload(client, lines)
    created = client.batches.create(
        input_file_id=file_id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"job": "nightly"},
    )
    assert created.status == "validating"
    assert created.request_counts is not None and created.request_counts.total == 0
    assert created.expires_at == created.created_at + 86400
    assert created.metadata == {"job": "nightly"}

    batch = wait_done(client, created.id)
    assert batch.status == "completed"
    assert batch.model == "m-chat"
    assert batch.request_counts is not None
    assert (batch.request_counts.total, batch.request_counts.completed) == (6, 5)
    assert batch.request_counts.failed == 1
    assert batch.in_progress_at is not None and batch.finalizing_at is not None
    assert batch.completed_at is not None
    assert created.created_at <= batch.in_progress_at <= batch.finalizing_at
    assert batch.finalizing_at <= batch.completed_at
    assert batch.failed_at is None and batch.cancelled_at is None and batch.errors is None

    out = records(client, batch.output_file_id)
    assert sorted(r["custom_id"] for r in out) == ["c0", "c1", "c2", "c4", "c5"]
    for r in out:
        assert r["id"].startswith("batch_req_") and r["error"] is None
        assert r["response"]["status_code"] == 200
        assert r["response"]["body"]["object"] == "chat.completion"
        assert r["response"]["body"]["choices"][0]["message"]["content"]
    (err,) = records(client, batch.error_file_id)
    assert err["custom_id"] == "c3" and err["error"] is None
    assert err["response"]["status_code"] == 400
    assert "missing" in err["response"]["body"]["error"]["message"]
    meta = client.files.retrieve(batch.output_file_id)
    assert meta.purpose == "batch_output" and meta.filename == f"{batch.id}_output.jsonl"

    # the batch's usage is the sum of its answers'
    assert batch.usage is not None
    assert batch.usage.input_tokens == sum(
        r["response"]["body"]["usage"]["prompt_tokens"] for r in out
    )
    assert batch.usage.output_tokens == sum(
        r["response"]["body"]["usage"]["completion_tokens"] for r in out
    )

    # one ledger row per line, in mode batch, priced with the batch multiplier
    ids = {r["response"]["request_id"] for r in [*out, err]}
    rows = ledger_rows(stack, ids)
    assert set(rows) == ids
    for r in rows.values():
        assert r["mode"] == "batch" and r["key"] == "app" and r["model"] == "m-chat"
    served = [r for r in rows.values() if r["status"] == 200]
    assert len(served) == 5
    for r in served:
        expected = (r["input_tokens"] * BATCH_IN + r["output_tokens"] * BATCH_OUT) / MTOK
        assert r["cost_usd"] == expected > 0
        assert r["revenue_usd"] == r["cost_usd"]
    (failed,) = [r for r in rows.values() if r["status"] != 200]
    assert failed["status"] == 400 and failed["revenue_usd"] == 0
    (attempt,) = read_attempts(stack.config.raw.storage.ledger, failed["request_id"])
    assert attempt["flag"] == "U4XX"


def test_a_malformed_file_fails_the_batch_naming_each_bad_line(
    client: openai.OpenAI,
) -> None:
    lines: list[Any] = [
        chat_line("a", "one"),
        '{"custom_id": "b", "method": "POST", ',
        chat_line("b", "two"),
        {"method": "POST", "url": "/v1/chat/completions", "body": {"model": "m-chat"}},
        chat_line("a", "again"),
        {**chat_line("c", "three"), "url": "/v1/completions"},
        chat_line("d", "four", model="m-slow"),
        {**chat_line("e", "five"), "method": "GET"},
        {**chat_line("f", "six"), "body": "not an object"},
    ]
    batch = wait_done(
        client,
        client.batches.create(
            input_file_id=upload(client, lines),
            endpoint="/v1/chat/completions",
            completion_window="24h",
        ).id,
    )
    assert batch.status == "failed"
    assert batch.failed_at is not None and batch.in_progress_at is None
    assert batch.output_file_id is None and batch.error_file_id is None
    assert batch.errors is not None and batch.errors.data is not None
    found = [(e.line, e.code, e.param) for e in batch.errors.data]
    assert found == [
        (2, "invalid_json_line", None),
        (4, "missing_required_parameter", "custom_id"),
        (5, "duplicate_custom_id", "custom_id"),
        (6, "invalid_url", "url"),
        (7, "mismatched_model", "body.model"),
        (8, "invalid_value", "method"),
        (9, "invalid_value", "body"),
    ]
    assert all(e.message for e in batch.errors.data)
    assert batch.request_counts is not None and batch.request_counts.total == 0


def test_a_model_the_gateway_does_not_serve_fails_validation(client: openai.OpenAI) -> None:
    batch = wait_done(
        client,
        client.batches.create(
            input_file_id=upload(client, [chat_line("x", "hi", model="no-such-model")]),
            endpoint="/v1/chat/completions",
            completion_window="24h",
        ).id,
    )
    assert batch.status == "failed"
    assert batch.errors is not None and batch.errors.data is not None
    (error,) = batch.errors.data
    assert (error.line, error.code, error.param) == (1, "model_not_found", "body.model")


def test_every_target_down_puts_the_lines_in_the_error_file(
    stack: Stack, client: openai.OpenAI
) -> None:
    lines = [chat_line(f"d{i}", "hi", model="m-dead") for i in range(2)]
    batch = wait_done(
        client,
        client.batches.create(
            input_file_id=upload(client, lines),
            endpoint="/v1/chat/completions",
            completion_window="24h",
        ).id,
    )
    assert batch.status == "completed" and batch.output_file_id is None
    errors = records(client, batch.error_file_id)
    assert sorted(r["custom_id"] for r in errors) == ["d0", "d1"]
    assert {r["response"]["status_code"] for r in errors} == {503}
    rows = ledger_rows(stack, {r["response"]["request_id"] for r in errors})
    assert {(r["status"], r["mode"]) for r in rows.values()} == {(503, "batch")}


def test_a_key_over_its_budget_gets_its_lines_refused_not_retried(stack: Stack) -> None:
    broke = openai.OpenAI(base_url=stack.url + "/v1", api_key=BROKE_KEY, max_retries=0)
    try:
        lines = [chat_line(f"b{i}", "hi") for i in range(2)]
        batch = wait_done(
            broke,
            broke.batches.create(
                input_file_id=upload(broke, lines),
                endpoint="/v1/chat/completions",
                completion_window="24h",
            ).id,
        )
        assert batch.status == "completed"
        assert batch.request_counts is not None and batch.request_counts.failed == 2
        errors = records(broke, batch.error_file_id)
        assert {r["response"]["status_code"] for r in errors} == {429}
        assert {r["response"]["body"]["error"]["code"] for r in errors} == {"insufficient_quota"}
    finally:
        broke.close()


def test_embedding_lines_run(
    client: openai.OpenAI,
) -> None:
    embed = [
        {
            "custom_id": f"e{i}",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": "e-embed", "input": f"text {i}"},
        }
        for i in range(3)
    ]
    batch = wait_done(
        client,
        client.batches.create(
            input_file_id=upload(client, embed), endpoint="/v1/embeddings", completion_window="24h"
        ).id,
    )
    assert batch.status == "completed"
    out = records(client, batch.output_file_id)
    assert sorted(r["custom_id"] for r in out) == ["e0", "e1", "e2"]
    assert all(r["response"]["body"]["data"][0]["embedding"] for r in out)


def test_cancel_stops_a_running_batch_with_partial_results(
    stack: Stack, client: openai.OpenAI
) -> None:
    lines = [chat_line(f"s{i}", f"slow {i}", model="m-slow") for i in range(200)]
    created = client.batches.create(
        input_file_id=upload(client, lines),
        endpoint="/v1/chat/completions",
        completion_window="24h",
    )
    cancelling = client.batches.cancel(created.id)
    assert cancelling.status == "cancelling" and cancelling.cancelling_at is not None
    batch = wait_done(client, created.id)
    assert batch.status == "cancelled"
    assert batch.cancelled_at is not None and batch.cancelled_at >= cancelling.cancelling_at
    assert batch.request_counts is not None
    done = batch.request_counts.completed
    assert done < 200 and batch.request_counts.failed == 0
    out = records(client, batch.output_file_id)
    assert len(out) == done and all(r["response"]["status_code"] == 200 for r in out)
    # cancelling again is harmless; a finished batch cannot be cancelled
    assert client.batches.cancel(created.id).status == "cancelled"
    finished = wait_done(
        client,
        client.batches.create(
            input_file_id=upload(client, [chat_line("z", "hi")]),
            endpoint="/v1/chat/completions",
            completion_window="24h",
        ).id,
    )
    with pytest.raises(openai.ConflictError):
        client.batches.cancel(finished.id)

"""Failover, the ledger and its export, models, embeddings, token counting, health, metrics."""

from __future__ import annotations

import base64
import io
import json
import struct

import httpx2 as httpx
import openai
import pytest

from tokenway.accounting.export import export
from tokenway.routing.health import Breakers

from .conftest import KEY, clients_for
from .stack import Stack


def oai(stack: Stack, key: str = KEY) -> openai.OpenAI:
    return clients_for(stack).openai(key)


def rows(stack: Stack) -> dict[str, dict[str, object]]:
    stack.flush()
    out = io.StringIO()
    export(stack.config.raw.storage.ledger, "jsonl", None, out)
    return {r["request_id"]: r for r in map(json.loads, out.getvalue().splitlines())}


def test_failover_to_next_target_and_ledger(stack: Stack) -> None:
    # Earlier tests may have ejected the dead target; with a fresh breaker it is tried first.
    stack.rt.routing.breakers = Breakers(stack.rt.config.raw.routing.breaker)
    r = oai(stack).chat.completions.with_raw_response.create(
        model="m-failover", messages=[{"role": "user", "content": "hi"}]
    )
    assert r.parse().choices[0].message.content
    assert r.headers["x-tokenway-provider"] == "anthropic"
    assert r.headers["x-tokenway-attempts"] == "2"
    row = rows(stack)[r.headers["x-tokenway-request-id"]]
    assert row["attempts"] == 2 and row["status"] == 200
    assert row["provider"] == "anthropic" and row["provider_model"] == "claude-sonnet-4-5"
    assert row["mode"] == "realtime" and row["key"] == "app"


def test_streamed_failover(stack: Stack) -> None:
    with (
        clients_for(stack)
        .anthropic()
        .messages.stream(
            model="m-failover", max_tokens=30, messages=[{"role": "user", "content": "hi"}]
        ) as s
    ):
        assert "".join(s.text_stream)


def test_ledger_row_fields_and_cost(stack: Stack) -> None:
    r = oai(stack).chat.completions.with_raw_response.create(
        model="m-openai", messages=[{"role": "user", "content": "count me"}]
    )
    c = r.parse()
    row = rows(stack)[r.headers["x-tokenway-request-id"]]
    assert c.usage is not None
    assert row["input_tokens"] == c.usage.prompt_tokens
    assert row["output_tokens"] == c.usage.completion_tokens
    expected = (c.usage.prompt_tokens * 0.15 + c.usage.completion_tokens * 0.60) / 1e6
    assert abs(float(str(row["cost_usd"])) - expected) < 1e-12
    assert len(str(row["cost_usd"]).split(".")[1]) >= 9
    assert row["ts"].endswith("Z")  # type: ignore[union-attr]
    assert (
        r.headers["x-tokenway-cost-usd"]
        == str(row["cost_usd"])[: len(r.headers["x-tokenway-cost-usd"])]
    )


def test_streamed_request_is_costed(stack: Stack) -> None:
    client = oai(stack)
    with client.chat.completions.with_streaming_response.create(
        model="m-anthropic", messages=[{"role": "user", "content": "stream"}], stream=True
    ) as resp:
        rid = resp.headers["x-tokenway-request-id"]
        for _ in resp.iter_lines():
            pass
    row = rows(stack)[rid]
    assert row["stream"] is True and row["output_tokens"] > 0  # type: ignore[operator]
    assert row["input_tokens"] > 0  # type: ignore[operator]


def test_deepseek_cache_hits_counted(stack: Stack) -> None:
    sim = stack.sims["s-deepseek"]
    long_prompt = " ".join(f"word{i}" for i in range(1500))
    client = oai(stack)
    client.chat.completions.create(
        model="m-deepseek", messages=[{"role": "user", "content": long_prompt}]
    )
    r = client.chat.completions.with_raw_response.create(
        model="m-deepseek", messages=[{"role": "user", "content": long_prompt}]
    )
    usage = r.parse().usage
    assert usage is not None
    raw = json.loads(r.http_response.text)["usage"]
    assert raw["prompt_cache_hit_tokens"] > 0
    row = rows(stack)[r.headers["x-tokenway-request-id"]]
    assert row["cache_read_tokens"] == raw["prompt_cache_hit_tokens"]
    assert sim.request_count >= 2


def test_anthropic_cache_write_split_in_ledger(stack: Stack) -> None:
    client = clients_for(stack).anthropic()
    text = " ".join(f"token{i}" for i in range(1500))
    r = client.messages.with_raw_response.create(
        model="m-anthropic",
        max_tokens=20,
        system=[
            {"type": "text", "text": text, "cache_control": {"type": "ephemeral", "ttl": "1h"}}
        ],
        messages=[{"role": "user", "content": "hi"}],
    )
    m = r.parse()
    row = rows(stack)[r.headers["x-tokenway-request-id"]]
    written = m.usage.cache_creation_input_tokens or 0
    assert written > 0
    assert row["cache_write_tokens"] == written
    assert row["cache_write_1h_tokens"] == written
    assert row["input_tokens"] == m.usage.input_tokens + written + (
        m.usage.cache_read_input_tokens or 0
    )


def test_azure_deployment_url(stack: Stack) -> None:
    oai(stack).chat.completions.create(
        model="m-azure", messages=[{"role": "user", "content": "hi"}]
    )
    got = stack.sims["s-azure"].received[-1]
    assert got.path == "/openai/deployments/my-gpt-deployment/chat/completions"
    assert got.query["api-version"] == "2024-10-21"
    assert "api-key" in got.headers and "authorization" not in got.headers


def test_models_list_shapes(stack: Stack) -> None:
    ids = [m.id for m in oai(stack).models.list()]
    assert "m-openai" in ids and "e-openai" in ids
    page = clients_for(stack).anthropic().models.list()
    assert "m-anthropic" in [m.id for m in page.data]
    assert page.data[0].type == "model"


def test_count_tokens(stack: Stack) -> None:
    client = clients_for(stack).anthropic()
    short = client.messages.count_tokens(
        model="m-anthropic", messages=[{"role": "user", "content": "hi"}]
    )
    longer = client.messages.count_tokens(
        model="m-anthropic", messages=[{"role": "user", "content": "hi " * 200}]
    )
    assert 0 < short.input_tokens < longer.input_tokens


def test_embeddings_openai_and_gemini(stack: Stack) -> None:
    client = oai(stack)
    for model in ("e-openai", "e-gemini"):
        e = client.embeddings.create(model=model, input=["alpha", "beta"])
        assert len(e.data) == 2 and len(e.data[0].embedding) > 8
        assert e.usage.prompt_tokens > 0
    r = httpx.post(
        stack.url + "/v1/embeddings",
        headers={"authorization": f"Bearer {KEY}"},
        json={"model": "e-gemini", "input": "alpha", "encoding_format": "base64"},
    )
    vec = base64.b64decode(r.json()["data"][0]["embedding"])
    assert len(vec) % 4 == 0 and struct.unpack("<f", vec[:4])[0] == struct.unpack("<f", vec[:4])[0]


def test_chat_model_is_not_an_embedding_model(stack: Stack) -> None:
    try:
        oai(stack).embeddings.create(model="m-openai", input="x")
    except openai.NotFoundError:
        return
    raise AssertionError("expected 404")


def test_health_ready_metrics(stack: Stack) -> None:
    assert httpx.get(stack.url + "/healthz").status_code == 200
    assert httpx.get(stack.url + "/readyz").json() == {"status": "ready"}
    oai(stack).chat.completions.create(
        model="m-openai", messages=[{"role": "user", "content": "m"}]
    )
    text = httpx.get(stack.url + "/metrics").text
    assert (
        'tokenway_requests_total{api="openai.chat",model="m-openai",provider="openai",status="200"}'
        in text
    )
    assert "tokenway_tokens_total" in text and "tokenway_request_latency_seconds_bucket" in text


def test_admin_endpoints_need_the_admin_key_and_show_no_secrets(stack: Stack) -> None:
    r = httpx.get(stack.url + "/admin/keys", headers={"authorization": "Bearer sk-test-admin"})
    assert r.status_code == 200
    names = [k["name"] for k in r.json()["data"]]
    assert names == ["app", "limited", "narrow", "planned"]
    assert "sk-test" not in r.text
    providers = httpx.get(
        stack.url + "/admin/providers", headers={"x-api-key": "sk-test-admin"}
    ).json()["data"]
    assert {p["name"]: p["kind"] for p in providers}["gemini"] == "gemini"
    assert "sk-upstream" not in str(providers)
    denied = httpx.get(stack.url + "/admin/keys", headers={"authorization": f"Bearer {KEY}"})
    assert denied.status_code == 403
    assert httpx.get(stack.url + "/admin/keys").status_code == 401


def test_attribution_end_user_and_tags_reach_the_ledger(stack: Stack) -> None:
    r = oai(stack).chat.completions.with_raw_response.create(
        model="m-anthropic",
        messages=[{"role": "user", "content": "hi"}],
        user="u-42",
        metadata={"feature": "search"},
        extra_headers={"x-tokenway-tags": "tenant=acme, feature=summarise"},
    )
    row = rows(stack)[r.headers["x-tokenway-request-id"]]
    assert row["end_user"] == "u-42"
    assert row["tags"] == {"feature": "summarise", "tenant": "acme"}
    assert row["task"] is None
    t = oai(stack).chat.completions.with_raw_response.create(
        model="m-openai",
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={"x-tokenway-task": "triage"},
    )
    assert rows(stack)[t.headers["x-tokenway-request-id"]]["task"] == "triage"
    e = oai(stack).embeddings.with_raw_response.create(
        model="e-openai", input="x", extra_body={"metadata": {"task": "index"}}
    )
    assert rows(stack)[e.headers["x-tokenway-request-id"]]["task"] == "index"
    with pytest.raises(openai.BadRequestError, match="x-tokenway-task"):
        oai(stack).chat.completions.create(
            model="m-openai",
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-tokenway-task": "t" * 200},
        )
    m = (
        clients_for(stack)
        .anthropic()
        .messages.with_raw_response.create(
            model="m-openai",
            max_tokens=10,
            messages=[{"role": "user", "content": "hi"}],
            metadata={"user_id": "u-7"},
        )
    )
    assert rows(stack)[m.headers["x-tokenway-request-id"]]["end_user"] == "u-7"
    with pytest.raises(openai.BadRequestError, match="x-tokenway-tags"):
        oai(stack).chat.completions.create(
            model="m-openai",
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-tokenway-tags": "no-equals-sign"},
        )
    from tokenway.accounting.ledger import read_requests
    from tokenway.reports.spend import spend_report

    groups, _ = spend_report(read_requests(stack.config.raw.storage.ledger), "tag:tenant")
    assert "acme" in {g.name for g in groups}


def test_plan_markup_sets_revenue_on_the_row(stack: Stack) -> None:
    from decimal import Decimal

    from .conftest import PLANNED_KEY

    r = oai(stack, PLANNED_KEY).chat.completions.with_raw_response.create(
        model="m-openai", messages=[{"role": "user", "content": "resell me"}]
    )
    row = rows(stack)[r.headers["x-tokenway-request-id"]]
    assert Decimal(row["revenue_usd"]) == Decimal(row["cost_usd"]) * Decimal("1.5") > 0

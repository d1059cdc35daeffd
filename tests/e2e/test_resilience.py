"""Failures on the way: timeouts, dropped connections, cut streams, upstream 429s, refused keys,
and clients that go away. Each must end in a clear answer and a ledger row."""

from __future__ import annotations

import io
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from tokenway.accounting.export import export

from .conftest import KEY, clients_for, close_clients
from .stack import Stack

OK = {"ttft_ms": 1, "tokens_per_s": 5000, "output_tokens": 12}
GOOD_KEY = "sk-upstream-good"


def doc(ledger: Path) -> dict[str, Any]:
    slow = {"ttft_ms": 5, "tokens_per_s": 40, "output_tokens": 200}
    sims = {
        "ok": OK,
        "ok-ant": OK,
        "timeout": {**OK, "faults": [{"kind": "timeout"}]},
        "drop": {**OK, "faults": [{"kind": "drop"}]},
        "cut0": {**OK, "faults": [{"kind": "cut", "after_chunks": 0}]},
        "cut5": {**OK, "output_tokens": 40, "faults": [{"kind": "cut", "after_chunks": 5}]},
        "ratelimited": {**OK, "rpm": 1},
        "keyed": {**OK, "api_key": GOOD_KEY},
        "slow": slow,
        "gem-limited": {**OK, "rpm": 1},
    }
    kinds = {"ok-ant": "anthropic", "gem-limited": "gemini"}
    providers: list[dict[str, Any]] = []
    for name in sims:
        p: dict[str, Any] = {
            "name": name,
            "kind": kinds.get(name, "openai"),
            "base_url": f"sim://{name}",
        }
        if name == "timeout":
            p["timeout_s"] = 0.5
        if name == "keyed":
            p["api_key"] = ["sk-upstream-revoked", GOOD_KEY]
        providers.append(p)

    def model(name: str, *targets: str) -> dict[str, Any]:
        return {"name": name, "targets": [{"provider": t, "model": "gpt-4o-mini"} for t in targets]}

    return {
        "storage": {"ledger": f"sqlite:///{ledger}"},
        "sim": [
            {"name": n, "kind": kinds.get(n, "openai"), "scenario": s} for n, s in sims.items()
        ],
        "providers": providers,
        "models": [
            model("timeout-then-ok", "timeout", "ok"),
            model("drop-then-ant", "drop", "ok-ant"),
            model("cut0-then-ok", "cut0", "ok"),
            model("cut-late", "cut5"),
            model("limited", "ratelimited"),
            model("keyed", "keyed"),
            model("slow", "slow"),
            model("gem-limited", "gem-limited"),
        ],
        "keys": [{"name": "app", "key": KEY}],
    }


@pytest.fixture(scope="module")
def rs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(doc(tmp_path_factory.mktemp("res") / "ledger.db")).start()
    yield s
    close_clients(s)
    s.stop()


def row(stack: Stack, request_id: str) -> dict[str, Any]:
    stack.flush()
    out = io.StringIO()
    export(stack.config.raw.storage.ledger, "jsonl", None, out)
    found: dict[str, Any] = {
        r["request_id"]: r for r in map(json.loads, out.getvalue().splitlines())
    }
    return found[request_id]


def test_timeout_moves_to_next_target(rs: Stack) -> None:
    r = (
        clients_for(rs)
        .openai()
        .chat.completions.with_raw_response.create(
            model="timeout-then-ok", messages=[{"role": "user", "content": "hi"}]
        )
    )
    assert r.headers["x-tokenway-provider"] == "ok"
    assert r.headers["x-tokenway-attempts"] == "2"
    assert row(rs, r.headers["x-tokenway-request-id"])["attempts"] == 2


def test_dropped_connection_moves_across_protocols(rs: Stack) -> None:
    with (
        clients_for(rs)
        .openai()
        .chat.completions.with_streaming_response.create(
            model="drop-then-ant", messages=[{"role": "user", "content": "hi"}], stream=True
        ) as resp
    ):
        assert resp.headers["x-tokenway-provider"] == "ok-ant"
        text = "".join(ch.choices[0].delta.content or "" for ch in resp.parse() if ch.choices)
    assert text


def test_stream_cut_before_first_token_fails_over(rs: Stack) -> None:
    chunks = list(
        clients_for(rs)
        .openai()
        .chat.completions.create(
            model="cut0-then-ok", messages=[{"role": "user", "content": "hi"}], stream=True
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_stream_cut_midway_is_reported_and_costed(rs: Stack) -> None:
    client = clients_for(rs).openai()
    got = ""
    with client.chat.completions.with_streaming_response.create(
        model="cut-late", messages=[{"role": "user", "content": "hi"}], stream=True
    ) as resp:
        rid = resp.headers["x-tokenway-request-id"]
        with pytest.raises(openai.APIError) as e:
            for ch in resp.parse():
                if ch.choices:
                    got += ch.choices[0].delta.content or ""
    assert "stream" in str(e.value)
    assert got
    r = row(rs, rid)
    assert r["status"] == 200
    assert r["output_tokens"] > 0 and r["input_tokens"] > 0


def test_upstream_429_reaches_client_as_rate_limit(rs: Stack) -> None:
    client = clients_for(rs).openai()
    client.chat.completions.create(model="limited", messages=[{"role": "user", "content": "a"}])
    with pytest.raises(openai.RateLimitError) as e:
        client.chat.completions.create(model="limited", messages=[{"role": "user", "content": "b"}])
    assert int(e.value.response.headers["retry-after"]) >= 1
    with pytest.raises(anthropic.RateLimitError):
        clients_for(rs).anthropic().messages.create(
            model="limited", max_tokens=10, messages=[{"role": "user", "content": "c"}]
        )


def test_refused_provider_key_is_rested_and_the_next_used(rs: Stack) -> None:
    client = clients_for(rs).openai()
    for _ in range(3):
        r = client.chat.completions.create(
            model="keyed", messages=[{"role": "user", "content": "hi"}]
        )
        assert r.choices[0].message.content
    sent = [q.headers.get("authorization") for q in rs.sims["keyed"].received]
    # the revoked key was tried once, then rested: every later request used the good key
    assert sent.count("Bearer sk-upstream-revoked") == 1
    assert sent[-2:] == [f"Bearer {GOOD_KEY}"] * 2


def test_client_disconnect_mid_stream_is_recorded(rs: Stack) -> None:
    port = int(rs.url.rsplit(":", 1)[1])
    body = json.dumps(
        {"model": "slow", "stream": True, "messages": [{"role": "user", "content": "go"}]}
    ).encode()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            + f"authorization: Bearer {KEY}\r\ncontent-length: {len(body)}\r\n\r\n".encode()
            + body
        )
        head = b""
        while b"data:" not in head:
            head += sock.recv(4096)
    rid = head.split(b"x-tokenway-request-id: ")[1].split(b"\r\n")[0].decode()
    import time

    for _ in range(100):
        try:
            r = row(rs, rid)
            break
        except KeyError:
            time.sleep(0.05)
    assert r["status"] == 499
    assert r["output_tokens"] > 0


def test_gemini_retry_info_becomes_retry_after(rs: Stack) -> None:
    client = clients_for(rs).anthropic()
    client.messages.create(
        model="gem-limited", max_tokens=10, messages=[{"role": "user", "content": "a"}]
    )
    with pytest.raises(anthropic.RateLimitError) as e:
        client.messages.create(
            model="gem-limited", max_tokens=10, messages=[{"role": "user", "content": "b"}]
        )
    assert int(e.value.response.headers["retry-after"]) >= 1
    assert e.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]

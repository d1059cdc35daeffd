"""Bad input and failures reach the client in its own API's error shape and status."""

from __future__ import annotations

import json

import anthropic
import httpx2 as httpx
import openai
import pytest

from .conftest import KEY, LIMITED_KEY, NARROW_KEY, UPSTREAM_KEY, clients_for
from .stack import Stack


def oai(stack: Stack, key: str = KEY) -> openai.OpenAI:
    return clients_for(stack).openai(key)


def ant(stack: Stack, key: str = KEY) -> anthropic.Anthropic:
    return clients_for(stack).anthropic(key)


MSG = [{"role": "user", "content": "hi"}]


def test_wrong_key_openai(stack: Stack) -> None:
    with pytest.raises(openai.AuthenticationError) as e:
        oai(stack, "sk-wrong").chat.completions.create(model="m-openai", messages=MSG)
    assert e.value.status_code == 401
    assert e.value.body["message"] == "Invalid API key."  # type: ignore[index]


def test_wrong_key_anthropic(stack: Stack) -> None:
    with pytest.raises(anthropic.AuthenticationError) as e:
        ant(stack, "sk-wrong").messages.create(model="m-anthropic", max_tokens=5, messages=MSG)
    assert e.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]


def test_missing_key(stack: Stack) -> None:
    r = httpx.post(stack.url + "/v1/chat/completions", json={"model": "m-openai", "messages": MSG})
    assert r.status_code == 401
    assert "Missing API key" in r.json()["error"]["message"]


def test_unknown_model_openai(stack: Stack) -> None:
    with pytest.raises(openai.NotFoundError) as e:
        oai(stack).chat.completions.create(model="nope", messages=MSG)
    assert "nope" in str(e.value)


def test_unknown_model_anthropic(stack: Stack) -> None:
    with pytest.raises(anthropic.NotFoundError) as e:
        ant(stack).messages.create(model="nope", max_tokens=5, messages=MSG)
    assert e.value.body["type"] == "error"  # type: ignore[index]


def test_model_not_allowed_for_key(stack: Stack) -> None:
    with pytest.raises(openai.PermissionDeniedError):
        oai(stack, NARROW_KEY).chat.completions.create(model="m-anthropic", messages=MSG)
    listed = [m.id for m in oai(stack, NARROW_KEY).models.list()]
    assert listed == ["m-openai"]


def test_bad_request_openai(stack: Stack) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        oai(stack).chat.completions.create(
            model="m-openai", messages=[{"role": "wizard", "content": "x"}]
        )
    assert "role" in str(e.value)


def test_bad_request_anthropic_missing_max_tokens(stack: Stack) -> None:
    r = httpx.post(
        stack.url + "/v1/messages",
        headers={"x-api-key": KEY, "anthropic-version": "2023-06-01"},
        json={"model": "m-anthropic", "messages": MSG},
    )
    assert r.status_code == 400
    body = r.json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in body["error"]["message"]


@pytest.mark.parametrize(
    "body,needle",
    [
        (b"{not json", "not valid JSON"),
        (b"[1,2]", "JSON object"),
        (b"", "empty"),
        (b'{"model": 5, "messages": []}', "model"),
        (b'{"model": "m-openai"}', "messages"),
        (b'{"model": "m-openai", "messages": "hi"}', "messages"),
        (b"[" * 100000 + b"]" * 100000, "nested"),
    ],
)
def test_malformed_bodies(stack: Stack, body: bytes, needle: str) -> None:
    r = httpx.post(
        stack.url + "/v1/chat/completions",
        headers={"authorization": f"Bearer {KEY}", "content-type": "application/json"},
        content=body,
    )
    assert r.status_code == 400, r.text
    assert needle in r.json()["error"]["message"]


def test_body_too_large(stack: Stack) -> None:
    big = (
        b'{"model":"m-openai","messages":[{"role":"user","content":"'
        + b"a" * (33 * 1024 * 1024)
        + b'"}]}'
    )
    r = httpx.post(
        stack.url + "/v1/chat/completions",
        headers={"authorization": f"Bearer {KEY}", "content-type": "application/json"},
        content=big,
    )
    assert r.status_code == 413
    assert "limit" in r.json()["error"]["message"]


@pytest.mark.parametrize("api", ["openai", "anthropic"])
def test_bodies_past_a_mib_are_parsed_and_checked_alike(stack: Stack, api: str) -> None:
    # >= 1 MiB bodies are parsed on a worker thread (gateway/app.py BIG_BODY): the same
    # answers, the same errors naming the field
    turns = [{"role": "user", "content": "x" * 100}, {"role": "assistant", "content": "ok"}]
    messages = turns * 7000 + [{"role": "user", "content": "hello"}]
    path = "/v1/chat/completions" if api == "openai" else "/v1/messages"
    body = {"model": "m-openai", "messages": messages, "max_tokens": 8}
    assert len(json.dumps(body)) > 1 << 20
    headers = {"authorization": f"Bearer {KEY}", "anthropic-version": "2023-06-01"}
    ok = httpx.post(stack.url + path, headers=headers, json=body, timeout=60)
    assert ok.status_code == 200, ok.text[:300]
    bad = {**body, "messages": [*messages[:-1], {"role": "user", "content": 5}]}
    r = httpx.post(stack.url + path, headers=headers, json=bad, timeout=60)
    assert r.status_code == 400, r.text[:300]
    assert "messages[14000].content" in r.text


def test_unknown_path(stack: Stack) -> None:
    r = httpx.get(stack.url + "/v1/nothing-here", headers={"authorization": f"Bearer {KEY}"})
    assert r.status_code == 404 and "Unknown endpoint" in r.json()["error"]["message"]


def test_key_rate_limit(stack: Stack) -> None:
    client = oai(stack, LIMITED_KEY)
    r = client.chat.completions.with_raw_response.create(model="m-openai", messages=MSG)
    assert r.headers["x-ratelimit-limit-requests"] == "2"
    assert r.headers["x-ratelimit-remaining-requests"] == "1"
    client.chat.completions.create(model="m-openai", messages=MSG)
    with pytest.raises(openai.RateLimitError) as e:
        client.chat.completions.create(model="m-openai", messages=MSG)
    assert int(e.value.response.headers["retry-after"]) >= 1


def test_all_targets_down_is_503_in_shape(stack: Stack) -> None:
    with pytest.raises(openai.InternalServerError) as e:
        oai(stack).chat.completions.create(model="m-dead", messages=MSG)
    assert e.value.status_code == 503 and int(e.value.response.headers["retry-after"]) >= 1
    with pytest.raises(anthropic.InternalServerError):
        ant(stack).messages.create(model="m-dead", max_tokens=5, messages=MSG)


def test_upstream_key_never_leaks(stack: Stack, capfd: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(openai.InternalServerError) as e:
        oai(stack).chat.completions.create(model="m-dead", messages=MSG)
    assert UPSTREAM_KEY not in e.value.response.text
    r = oai(stack).chat.completions.with_raw_response.create(model="m-openai", messages=MSG)
    assert UPSTREAM_KEY not in r.http_response.text
    assert all(UPSTREAM_KEY not in v for v in r.headers.values())
    out, err = capfd.readouterr()
    assert UPSTREAM_KEY not in out and UPSTREAM_KEY not in err


@pytest.mark.parametrize("options", ["true", '"x"', "5", "[1]"])
def test_stream_options_must_be_an_object(stack: Stack, options: str) -> None:
    r = httpx.post(
        stack.url + "/v1/chat/completions",
        headers={"authorization": f"Bearer {KEY}", "content-type": "application/json"},
        content=(
            '{"model":"m-openai","stream":true,"stream_options":' + options + ","
            '"messages":[{"role":"user","content":"hi"}]}'
        ).encode(),
    )
    assert r.status_code == 400 and "stream_options" in r.json()["error"]["message"]


def test_operator_headers_cannot_be_overridden(stack: Stack) -> None:
    oai(stack).chat.completions.create(
        model="m-openai",
        messages=MSG,
        extra_headers={"openai-organization": "org-client-chosen", "x-custom": "1"},
    )
    got = stack.sims["s-openai"].received[-1]
    assert "openai-organization" not in got.headers and "x-custom" not in got.headers


def test_embedding_dimensions_are_bounded(stack: Stack) -> None:
    with pytest.raises(openai.BadRequestError, match="dimensions"):
        oai(stack).embeddings.create(model="e-openai", input="x", dimensions=10**9)

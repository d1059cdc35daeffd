"""Malformed Responses requests get OpenAI-shaped 4xx errors, never a 5xx."""

from __future__ import annotations

from typing import Any

import httpx2 as httpx
import openai
import pytest

from tests.e2e.stack import Stack

from .conftest import KEY

OK: dict[str, Any] = {"model": "m-openai", "input": "hi"}


def post(stack: Stack, body: Any, key: str = KEY) -> httpx.Response:
    content = body if isinstance(body, bytes) else None
    return httpx.post(
        stack.url + "/v1/responses",
        headers={"authorization": f"Bearer {key}", "content-type": "application/json"},
        content=content,
        json=None if content is not None else body,
    )


BAD: list[tuple[str, Any, int, str | None, str]] = [
    ("missing model", {"input": "hi"}, 400, "model", "model: is required"),
    ("empty model", {"model": "", "input": "hi"}, 400, "model", "non-empty"),
    ("missing input", {"model": "m-openai"}, 400, "input", "input: is required"),
    ("empty input list", {**OK, "input": []}, 400, "input", "non-empty list"),
    ("input a number", {**OK, "input": 7}, 400, "input", "string or a non-empty list"),
    (
        "unknown item type",
        {**OK, "input": [{"type": "banana"}]},
        400,
        "input[0].type",
        "unknown item type 'banana'",
    ),
    (
        "hosted item",
        {**OK, "input": [{"type": "web_search_call", "id": "ws_1", "status": "completed"}]},
        400,
        "input[0]",
        "only function tools",
    ),
    (
        "item reference",
        {**OK, "input": [{"type": "item_reference", "id": "msg_1"}]},
        400,
        "input[0].type",
        "item references are not supported",
    ),
    (
        "unknown role",
        {**OK, "input": [{"role": "robot", "content": "hi"}]},
        400,
        "input[0].role",
        "unknown role 'robot'",
    ),
    (
        "output part in a user message",
        {**OK, "input": [{"role": "user", "content": [{"type": "output_text", "text": "x"}]}]},
        400,
        "input[0].content[0].type",
        "unknown content type 'output_text'",
    ),
    (
        "input file",
        {
            **OK,
            "input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}],
        },
        400,
        "input[0].content[0].type",
        "input_file parts are not supported",
    ),
    (
        "bad data url",
        {
            **OK,
            "input": [
                {"role": "user", "content": [{"type": "input_image", "image_url": "data:x"}]}
            ],
        },
        400,
        "input[0].content[0].image_url",
        "data URL",
    ),
    (
        "function_call_output without call_id",
        {**OK, "input": [{"type": "function_call_output", "output": "x"}]},
        400,
        "input[0].call_id",
        "is required",
    ),
    (
        "function_call with bad arguments",
        {
            **OK,
            "input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "{oops"}],
        },
        400,
        "input[0].arguments",
        "not valid JSON",
    ),
    (
        "web_search tool",
        {**OK, "tools": [{"type": "web_search"}]},
        400,
        "tools[0].type",
        "web search tools ('web_search') are not supported",
    ),
    (
        "file_search tool",
        {**OK, "tools": [{"type": "file_search", "vector_store_ids": ["vs"]}]},
        400,
        "tools[0].type",
        "file search tools",
    ),
    (
        "function tool without name",
        {**OK, "tools": [{"type": "function", "parameters": {}}]},
        400,
        "tools[0].name",
        "is required",
    ),
    (
        "hosted tool_choice",
        {**OK, "tool_choice": {"type": "web_search_preview"}},
        400,
        "tool_choice.type",
        "not supported",
    ),
    ("bad tool_choice", {**OK, "tool_choice": "sometimes"}, 400, "tool_choice", "must be"),
    (
        "json_schema without schema",
        {**OK, "text": {"format": {"type": "json_schema", "name": "x"}}},
        400,
        "text.format.schema",
        "is required",
    ),
    (
        "unknown text format",
        {**OK, "text": {"format": {"type": "yaml"}}},
        400,
        "text.format.type",
        "unknown type 'yaml'",
    ),
    (
        "unknown effort",
        {**OK, "reasoning": {"effort": "extreme"}},
        400,
        "reasoning.effort",
        "unknown effort",
    ),
    ("tiny max_output_tokens", {**OK, "max_output_tokens": 5}, 400, "max_output_tokens", "16"),
    ("temperature too high", {**OK, "temperature": 3}, 400, "temperature", "between 0 and 2"),
    ("top_p a string", {**OK, "top_p": "high"}, 400, "top_p", "must be a number"),
    ("store a string", {**OK, "store": "yes"}, 400, "store", "must be a boolean"),
    ("metadata not strings", {**OK, "metadata": {"a": 1}}, 400, "metadata.a", "strings"),
    ("background", {**OK, "background": True}, 400, "background", "background responses"),
    ("conversation", {**OK, "conversation": "conv_1"}, 400, "conversation", "Conversations"),
    (
        "unknown previous_response_id",
        {**OK, "previous_response_id": "resp_nope"},
        400,
        "previous_response_id",
        "Previous response with id 'resp_nope' not found.",
    ),
    ("unknown model", {**OK, "model": "no-such-model"}, 404, None, "does not exist"),
    # each of these was a 500
    ("item type a list", {**OK, "input": [{"type": ["message"]}]}, 400, "input[0].type", "unknown"),
    ("item type an object", {**OK, "input": [{"type": {"a": 1}}]}, 400, "input[0].type", "unknown"),
    (
        "arguments nested too deeply",
        {
            **OK,
            "input": [
                {
                    "type": "function_call",
                    "call_id": "c",
                    "name": "f",
                    "arguments": "[" * 5000 + "]" * 5000,
                }
            ],
        },
        400,
        "input[0].arguments",
        "nested too deeply",
    ),
    # on PostgreSQL the ledger could not store these, and the request went unbilled
    ("user with NUL", {**OK, "user": "a\x00b"}, 400, "user", "NUL"),
    ("metadata with NUL", {**OK, "metadata": {"k": "v\x00"}}, 400, "metadata", "NUL"),
]


@pytest.mark.parametrize(
    ("body", "status", "param", "words"),
    [case[1:] for case in BAD],
    ids=[case[0] for case in BAD],
)
def test_malformed_request(
    stack: Stack, body: Any, status: int, param: str | None, words: str
) -> None:
    r = post(stack, body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert words in err["message"]
    assert err["param"] == param
    assert err["type"] == ("invalid_request_error" if status == 400 else "not_found_error")


def test_not_json(stack: Stack) -> None:
    r = post(stack, b"{not json")
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]


def test_wrong_key(stack: Stack) -> None:
    r = post(stack, OK, key="sk-nope")
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"


def test_sdk_raises_the_right_classes(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="m-openai", input="hi", tools=[{"type": "web_search"}])
    assert e.value.param == "tools[0].type"
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="no-such-model", input="hi")
    with pytest.raises(openai.BadRequestError) as bad:
        client.responses.create(model="m-openai", input="hi", previous_response_id="resp_x")
    assert bad.value.code == "previous_response_not_found"


def test_unknown_subpaths_and_methods(stack: Stack) -> None:
    auth = {"authorization": f"Bearer {KEY}"}
    r = httpx.get(stack.url + "/v1/responses", headers=auth)
    assert r.status_code == 404 and "error" in r.json()
    r = httpx.get(stack.url + "/v1/responses/resp_x/elsewhere", headers=auth)
    assert r.status_code == 404
    r = httpx.post(stack.url + "/v1/responses/resp_x/cancel", headers=auth)
    assert r.status_code == 400 and "background" in r.json()["error"]["message"]
    r = httpx.get(stack.url + "/v1/responses/resp_x/input_items?limit=500", headers=auth)
    assert r.status_code == 400 and r.json()["error"]["param"] == "limit"
    r = httpx.get(stack.url + "/v1/responses/resp_x/input_items?order=up", headers=auth)
    assert r.status_code == 400 and r.json()["error"]["param"] == "order"


def test_unknown_fields_are_ignored(client: openai.OpenAI) -> None:
    # newer SDKs and agent frameworks add options freely: they must not break a request
    r = client.responses.create(
        model="m-openai",
        input="hi",
        include=["reasoning.encrypted_content"],
        truncation="auto",
        extra_body={
            "some_future_option": {"x": 1},
            "stream_options": {"include_obfuscation": False},
        },
    )
    assert r.status == "completed" and r.truncation == "auto"

"""Fuzzing `/v1/responses*` over HTTP, on SQLite and on PostgreSQL: whatever a client sends (wrong
JSON types in every field of CreateResponse, odd items and content parts, malformed tools, text
formats and reasoning, odd ids and query parameters, bytes that are not JSON), the gateway
answers 2xx or an OpenAI-shaped 4xx, logs no error and no secret, and keeps serving.

Tool and output schemas come from a pool of valid ones wherever a simulated provider has to
follow them (it would fail on a malformed one, as a real provider would refuse it); arbitrary
schemas are sent with `tool_choice: "none"`, which translates them but asks for no call.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, urlencode

import httpx2 as httpx
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tests.http_fuzz import (
    Api,
    backend_fixtures,
    fuzz,
    json_values,
    odd_ids,
    odd_text,
    repeated,
    scalars,
)
from tokenway.translate.responses_request import EFFORTS

from .conftest import KEY, OTHER_KEY, UPSTREAM_KEY, WEATHER, stack_doc

SECRETS = [KEY, OTHER_KEY, UPSTREAM_KEY]
# one target of each protocol, and a native Responses upstream
MODELS = ["m-openai", "m-anthropic", "m-gemini", "m-native"]


class ResponsesApi(Api):
    """The gateway, with the Responses create call."""

    def create(self, body: Any, *, key: str | None = None) -> tuple[int, Any]:
        return self.post_json("/v1/responses", body, key=key)

    def made(self, body: dict[str, Any], *, key: str | None = None) -> dict[str, Any]:
        status, doc = self.create(body, key=key)
        assert status == 200 and doc["status"] == "completed", doc
        return dict(doc)


pg, api = backend_fixtures(ResponsesApi, stack_doc, SECRETS, [KEY, OTHER_KEY], "responses")


# ---- strategies -----------------------------------------------------------------------------

SCHEMAS: list[Any] = [
    WEATHER["parameters"],
    {"type": "object", "properties": {}},
    {"type": "object", "properties": {"n": {"type": "integer", "minimum": 3}}},
    {"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string"}}}},
]
ITEM_TYPES = [
    "message",
    "function_call",
    "function_call_output",
    "reasoning",
    "item_reference",
    "web_search_call",
    "banana",
]
PART_TYPES = [
    "input_text",
    "input_image",
    "input_file",
    "input_audio",
    "output_text",
    "refusal",
    "summary_text",
    "reasoning_text",
    "text",
]
IMAGE_URLS = [
    "https://example.com/cat.png",
    "data:image/png;base64,iVBORw0KGgo=",
    "data:x",
    "data:;base64,",
    "data:image/png,raw",
    "",
]


def _or_garbage(*choices: Any) -> st.SearchStrategy[Any]:
    """One of `choices` (plausible values) or any JSON value at all."""
    return st.one_of(st.sampled_from(choices), json_values)


parts = st.fixed_dictionaries(
    {"type": _or_garbage(*PART_TYPES)},
    optional={
        "text": st.one_of(odd_text, json_values),
        "image_url": _or_garbage(*IMAGE_URLS),
        "detail": _or_garbage("auto", "low", "high", "original", "huge"),
        "file_id": json_values,
        "refusal": json_values,
        "annotations": json_values,
    },
)
contents = st.one_of(odd_text, st.lists(st.one_of(parts, json_values), max_size=3), json_values)
items = st.fixed_dictionaries(
    {},
    optional={
        "type": _or_garbage(*ITEM_TYPES),
        "role": _or_garbage("user", "assistant", "system", "developer", "tool", "robot"),
        "content": contents,
        "id": st.one_of(odd_ids, json_values),
        "call_id": _or_garbage("call_1", ""),
        "name": _or_garbage("get_weather", ""),
        "arguments": _or_garbage("{}", '{"city": "Paris"}', "[1]", "{oops", "", "null"),
        "output": st.one_of(contents, json_values),
        "summary": st.one_of(st.lists(parts, max_size=2), json_values),
        "encrypted_content": _or_garbage("tw.sig.abc", "tw.red.abc", "opaque-blob"),
        "status": json_values,
    },
)
inputs = st.one_of(st.lists(st.one_of(items, json_values), max_size=4), json_values)
tools = st.fixed_dictionaries(
    {"type": _or_garbage("function", "web_search", "file_search", "mcp", "custom", "banana")},
    optional={
        "name": st.one_of(_or_garbage("get_weather", "f", ""), repeated("x", 300)),
        "description": st.one_of(odd_text, json_values),
        "parameters": st.one_of(st.sampled_from(SCHEMAS), scalars, st.lists(scalars, max_size=2)),
        "strict": st.one_of(st.booleans(), json_values),
    },
)
tool_choices = st.one_of(
    st.sampled_from(["auto", "none", "required", "sometimes"]),
    st.fixed_dictionaries(
        {"type": _or_garbage("function", "web_search_preview", "allowed_tools", "banana")},
        optional={"name": _or_garbage("get_weather", "nope")},
    ),
    json_values,
)
formats = st.fixed_dictionaries(
    {"type": _or_garbage("text", "json_object", "json_schema", "yaml")},
    optional={
        "name": _or_garbage("answer", ""),
        "schema": st.one_of(st.sampled_from(SCHEMAS), scalars),
        "strict": json_values,
        "description": json_values,
    },
)
texts = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "format": st.one_of(formats, json_values),
            "verbosity": _or_garbage("low", "medium", "high", "loud"),
        },
    ),
    json_values,
)
reasonings = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "effort": _or_garbage(*sorted(EFFORTS), "extreme"),
            "summary": _or_garbage("auto", "concise", "detailed"),
            "generate_summary": json_values,
        },
    ),
    json_values,
)
# Every field of CreateResponse, with plausible and absurd values, and some unknown fields.
FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "model": _or_garbage(*MODELS, "no-such-model", ""),
    "input": inputs,
    "instructions": st.one_of(odd_text, json_values),
    "tools": st.one_of(st.lists(st.one_of(tools, json_values), max_size=3), json_values),
    "tool_choice": tool_choices,
    "parallel_tool_calls": json_values,
    "text": texts,
    "reasoning": reasonings,
    "max_output_tokens": _or_garbage(16, 15, 0, -1, 2**31, 2**63, 2**64 + 1, 10**30, 1.5, "100"),
    "max_tool_calls": _or_garbage(1, 0, -5, 10**40),
    "temperature": _or_garbage(0, 2, 2.0001, -0.1, 1e308, "1"),
    "top_p": _or_garbage(0, 1, 1.5, -1),
    "metadata": st.one_of(st.dictionaries(odd_text, json_values, max_size=3), json_values),
    "user": st.one_of(odd_text, json_values),
    "store": json_values,
    "stream": json_values,
    "previous_response_id": st.one_of(odd_ids, json_values),
    "include": st.one_of(
        st.lists(_or_garbage("reasoning.encrypted_content", "message.output_text.logprobs")),
        json_values,
    ),
    "truncation": _or_garbage("auto", "disabled", "sometimes"),
    "background": json_values,
    "conversation": json_values,
    "prompt": json_values,
    "prompt_cache_key": st.one_of(odd_text, json_values),
    "safety_identifier": st.one_of(odd_text, json_values),
    "service_tier": _or_garbage("auto", "flex", "priority", "default"),
    "stream_options": json_values,
    "top_logprobs": json_values,
    "a_field_from_the_future": json_values,
}


@st.composite
def bodies(draw: st.DrawFn) -> dict[str, Any]:
    """A valid body with one to four of its fields (any of CreateResponse's) set to anything."""
    names = draw(st.lists(st.sampled_from(sorted(FIELDS)), min_size=1, max_size=4, unique=True))
    body: dict[str, Any] = {"model": draw(st.sampled_from(MODELS)), "input": "hi"}
    for name in names:
        body[name] = draw(FIELDS[name])
    return body


# ---- the tests ------------------------------------------------------------------------------


@fuzz(200)
@given(body=bodies())
def test_any_field_any_value(api: ResponsesApi, body: dict[str, Any]) -> None:
    api.create(body)


@fuzz(150)
@given(model=st.sampled_from(MODELS), value=inputs, instructions=st.none() | odd_text)
@example(model="m-openai", value=[{"type": ["message"]}], instructions=None)  # was a 500
@example(model="m-openai", value=[{"type": {"a": 1}}], instructions=None)  # was a 500
def test_odd_input_items_and_parts(
    api: ResponsesApi, model: str, value: Any, instructions: str | None
) -> None:
    body: dict[str, Any] = {"model": model, "input": value}
    if instructions is not None:
        body["instructions"] = instructions
    api.create(body)


@fuzz(100)
@given(
    model=st.sampled_from(MODELS),
    tool_list=st.lists(tools, max_size=3),
    choice=st.none() | tool_choices,
    text=st.none() | texts,
    reasoning=st.none() | reasonings,
    stream=st.booleans(),
)
def test_odd_tools_formats_and_reasoning(
    api: ResponsesApi,
    model: str,
    tool_list: list[Any],
    choice: Any,
    text: Any,
    reasoning: Any,
    stream: bool,
) -> None:
    body: dict[str, Any] = {"model": model, "input": "weather?", "tools": tool_list}
    for name, value in (("tool_choice", choice), ("text", text), ("reasoning", reasoning)):
        if value is not None:
            body[name] = value
    body["stream"] = stream
    api.create(body)


# JSON-Schema-looking objects with anything in their keywords.
schemas = st.recursive(
    st.fixed_dictionaries(
        {},
        optional={
            "type": _or_garbage("object", "array", "string", "integer", "null", ["string", "null"]),
            "required": json_values,
            "enum": json_values,
            "const": json_values,
            "$ref": _or_garbage("#/$defs/a", "#/definitions/a", "#/nope", "#", "http://x"),
            "format": st.one_of(
                st.sampled_from(["date-time", "enum", "int32", "email"]), odd_text, json_values
            ),
        },
    ),
    lambda inner: st.fixed_dictionaries(
        {},
        optional={
            "type": _or_garbage("object", "array"),
            "properties": st.one_of(st.dictionaries(odd_text, inner, max_size=3), json_values),
            "items": st.one_of(inner, json_values),
            "anyOf": st.one_of(st.lists(inner, max_size=3), json_values),
            "oneOf": st.one_of(st.lists(inner, max_size=2), json_values),
            "allOf": st.one_of(st.lists(inner, max_size=2), json_values),
            "$defs": st.one_of(st.dictionaries(st.just("a"), inner, max_size=1), json_values),
            "additionalProperties": st.one_of(inner, json_values),
        },
    ),
    max_leaves=6,
)


@fuzz(100)
@given(model=st.sampled_from(MODELS), schema=schemas)
def test_any_tool_schema_is_translated_or_refused(
    api: ResponsesApi, model: str, schema: Any
) -> None:
    tool = {"type": "function", "name": "f", "parameters": schema}
    api.create({"model": model, "input": "hi", "tools": [tool], "tool_choice": "none"})


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "string", "format": []},
        {"type": "integer", "format": {"a": 1}},
        {"properties": 5, "required": ["a"]},
    ],
)
def test_gemini_schemas_that_once_crashed_are_translated(api: ResponsesApi, schema: Any) -> None:
    tool = {"type": "function", "name": "f", "parameters": schema}
    api.create({"model": "m-gemini", "input": "hi", "tools": [tool], "tool_choice": "none"})


def _nested(depth: int, shape: str) -> bytes:
    """JSON nested `depth` deep, built as text (the encoders give up far earlier)."""
    if shape == "lists":
        return b"[" * depth + b"1" + b"]" * depth
    if shape == "objects":
        return b'{"a":' * depth + b"1" + b"}" * depth
    return b'{"type":"object","properties":{"a":' * depth + b'{"type":"string"}' + b"}}" * depth


# Where a client can nest JSON: `@` stands for the nested value.
DEEP: dict[str, str] = {
    "tool parameters": '"tools":[{"type":"function","name":"f","parameters":@}],'
    '"tool_choice":"none","input":"hi"',
    "text.format.schema": '"text":{"format":{"type":"json_schema","name":"x","schema":@}},'
    '"input":"hi"',
    "an unknown field": '"some_future_option":@,"input":"hi"',
    "input": '"input":@',
    "tool_choice": '"tool_choice":@,"input":"hi"',
    "metadata": '"metadata":@,"input":"hi"',
    # a JSON string: the body decodes, the arguments in it do not
    "function_call arguments": '"input":[{"type":"function_call","call_id":"c","name":"f",'
    '"arguments":@},{"type":"function_call_output","call_id":"c","output":"x"}]',
}


@pytest.mark.parametrize("where", sorted(DEEP))
@pytest.mark.parametrize("depth", [600, 5000])
def test_deep_nesting(api: ResponsesApi, where: str, depth: int) -> None:
    for model in MODELS:
        for shape in ("lists", "objects", "schemas"):
            value = _nested(depth, shape)
            if where == "function_call arguments":  # was a 500 (RecursionError)
                value = json.dumps(value.decode()).encode()
            body = f'{{"model":"{model}",{DEEP[where]}}}'.encode().replace(b"@", value)
            api.create(body)


not_json = st.one_of(
    st.binary(max_size=200),
    st.sampled_from(
        [
            b"",
            b"null",
            b"[]",
            b'"hi"',
            b"1e999",
            b"NaN",
            b'{"model": "m-openai", "input": "hi"',
            b'\xef\xbb\xbf{"model": "m-openai", "input": "hi"}',
            b'{"model": "m-openai", "input": "\xff\xfe"}',
            b'{"model": "m-openai", "input": "\\ud800"}',
            b'{"model": "m-openai", "input": "hi", "input": 5}',
        ]
    ),
    repeated(b"[", 100_000),
    st.just(50_000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
)


@fuzz(60)
@given(body=not_json)
def test_bodies_that_are_not_json_objects(api: ResponsesApi, body: bytes) -> None:
    status, _ = api.create(body)
    if not body.startswith(b'{"model"'):
        assert status == 400
    api.made({"model": "m-openai", "input": "still serving?"})


# Header values as a client may send them: any printable Latin-1 (what HTTP carries).
header_text = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=30
).map(lambda s: s.strip().encode("latin-1"))
HEADERS: dict[str, st.SearchStrategy[Any]] = {
    "x-tokenway-tags": st.one_of(
        st.sampled_from([b"a=b", b"a=b,c=d", b"=", b"a", b",", b"task=x,=y"]),
        repeated(b"a=b,", 100),
        header_text,
    ),
    "x-tokenway-task": st.one_of(st.sampled_from([b"chat", b""]), repeated(b"t", 300), header_text),
    # only timeouts too long to end the call: a short one is rightly a 504
    "x-tokenway-timeout-ms": st.one_of(
        st.sampled_from([b"60000", b"0", b"-1", b"86400001", b"1e3", b"abc", b""]),
        repeated(b"9", 5000),
    ),
    "x-tokenway-regions": st.one_of(st.sampled_from([b"us", b"", b",", b"nowhere"]), header_text),
    "authorization": st.one_of(
        st.sampled_from([f"Bearer {KEY}".encode(), b"Bearer", b"Basic eDp5", b"Bearer sk-nope"]),
        header_text,
    ),
    "x-api-key": st.one_of(st.sampled_from([KEY.encode(), b"sk-nope"]), header_text),
    "content-type": st.one_of(
        st.sampled_from([b"text/plain", b"multipart/form-data"]), header_text
    ),
    "anthropic-version": header_text,
    "openai-beta": header_text,
}


@fuzz(100)
@given(
    model=st.sampled_from(MODELS),
    headers=st.fixed_dictionaries({}, optional=HEADERS),
    stream=st.booleans(),
)
def test_odd_headers(
    api: ResponsesApi, model: str, headers: dict[str, bytes], stream: bool
) -> None:
    body = json.dumps({"model": model, "input": "hi", "stream": stream})
    api.send("POST", "/v1/responses", content=body, headers=headers)


@pytest.fixture(scope="module")
def stored(api: ResponsesApi) -> dict[str, str]:
    """Ids of stored responses: one of this key (three input items) and one of the other's."""
    three = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello"},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]},
    ]
    mine = api.made({"model": "m-openai", "input": three})["id"]
    theirs = api.made({"model": "m-openai", "input": "hi"}, key=OTHER_KEY)["id"]
    return {"mine": mine, "theirs": theirs}


QUERY_NAMES = ["limit", "order", "after", "stream", "include", "limit[]", "include[]", "x"]
query_values = st.one_of(
    odd_text,
    st.sampled_from(["1", "100", "101", "0", "-1", "1e3", "asc", "desc"]),
    repeated("9", 5000),
)


@fuzz(200)
@given(
    which=st.sampled_from(["mine", "theirs", "odd", "odd"]),
    # mostly one path segment: a '/' (or '%2F', which the server decodes) makes another
    odd=st.one_of(odd_ids.map(lambda s: s.replace("/", "").replace("%2F", "")), odd_ids),
    method=st.sampled_from(["GET", "GET", "GET", "DELETE", "POST", "PUT"]),
    sub=st.sampled_from(
        ["", "", "/input_items", "/input_items", "/cancel", "/x", "/input_items/y"]
    ),
    query=st.dictionaries(st.sampled_from(QUERY_NAMES), query_values, max_size=3),
    raw=st.booleans(),
)
# PostgreSQL cannot compare text holding U+0000: such an id was a 500 there
@example(which="odd", odd="a\x00b", method="GET", sub="", query={}, raw=False)
@example(which="odd", odd="a\x00b", method="DELETE", sub="", query={}, raw=False)
@example(which="odd", odd="%00", method="GET", sub="/input_items", query={}, raw=True)
@example(which="mine", odd="", method="GET", sub="/input_items", query={"after": "\x00"}, raw=False)
def test_odd_ids_and_query_parameters(
    api: ResponsesApi,
    stored: dict[str, str],
    which: str,
    odd: str,
    method: str,
    sub: str,
    query: dict[str, str],
    raw: bool,
) -> None:
    if method == "DELETE" and which != "odd":
        method = "GET"  # the stored responses must outlive the test
    rid = stored.get(which, odd)
    # percent-encoded as a client should, or with '/', '.' and '%' as typed ('../', '%00')
    path = "/v1/responses/" + quote(rid, safe="/.%" if raw else "") + sub
    qs = urlencode(query)
    status, doc = api.send(method, path + ("?" + qs if qs else ""))
    if which == "theirs" and sub in ("", "/input_items") and method == "GET":
        assert status in (400, 404)  # another key's response does not exist for this one
    if status == 200 and sub == "/input_items":
        assert doc["object"] == "list" and isinstance(doc["data"], list)


@fuzz(80)
@given(
    which=st.sampled_from(["mine", "theirs", "odd", "odd"]),
    odd=st.one_of(odd_ids, json_values),
    model=st.sampled_from(MODELS),
    stream=st.booleans(),
)
@example(which="odd", odd="resp_\x00", model="m-openai", stream=False)  # a 500 on PostgreSQL
def test_odd_previous_response_ids(
    api: ResponsesApi,
    stored: dict[str, str],
    which: str,
    odd: Any,
    model: str,
    stream: bool,
) -> None:
    body = {"model": model, "input": "and then?", "stream": stream, "store": False}
    body["previous_response_id"] = stored.get(which, odd)
    status, _ = api.create(body)
    if which == "mine":
        assert status == 200
    elif which == "theirs":
        assert status == 400


@fuzz(40)
@given(
    user=st.one_of(odd_text, json_values),
    metadata=st.one_of(st.dictionaries(odd_text, odd_text, max_size=3), json_values),
)
# each an unbilled request on PostgreSQL: the ledger dropped the row
@example(user="a\x00b", metadata=None)
@example(user=None, metadata={"k": "v\x00"})
@example(user=None, metadata={"k\x00": "v"})
def test_attribution_fields_never_cost_a_ledger_row(
    api: ResponsesApi, user: Any, metadata: Any
) -> None:
    # `user` and `metadata` end up in the ledger row: one the ledger cannot write is refused
    # up front (a row dropped at write time would be a request nobody is billed for)
    api.create({"model": "m-openai", "input": "hi", "user": user, "metadata": metadata})
    api.stack.flush()
    api.watch.assert_clean()


def test_still_serving_after_the_fuzz(api: ResponsesApi) -> None:
    made = api.made({"model": "m-anthropic", "input": "still there?"})
    status, doc = api.send("GET", f"/v1/responses/{made['id']}")
    assert status == 200 and doc["id"] == made["id"]
    r = httpx.get(api.stack.url + "/healthz")
    assert r.status_code == 200
    api.stack.flush()
    api.watch.assert_clean()

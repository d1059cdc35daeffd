"""Offline token counting."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenway import tokens
from tokenway.domain.types import (
    ChatRequest,
    ChatResponse,
    ImageBlock,
    Message,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolSpec,
    ToolUseBlock,
)
from tokenway.tokens import count_request, count_response, count_text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", 0),
        ("hello world", 2),
        ("Hello, world!", 4),
        ("The quick brown fox jumps over the lazy dog.", 10),
        # Special-token markup is plain text to a counter, never an error.
        ("<|endoftext|>", 7),
    ],
)
def test_count_text_known_o200k_counts(text: str, expected: int) -> None:
    assert count_text(text) == expected


def test_long_text_is_counted_in_pieces_without_drift() -> None:
    text = "lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 3000  # 171k chars
    whole = len(tokens._encoder().encode_ordinary(text))
    assert count_text(text) == whole


def test_text_past_the_tokenizer_limits_is_counted() -> None:
    # Over a million characters and over 200k tokens: the raw encoder refuses both.
    text = "ab " * 400_000
    # One token per " ab" word plus the trailing space.
    assert count_text(text) == 400_001


def test_lone_surrogates_do_not_crash() -> None:
    assert count_text("\ud800x") > 0


@settings(max_examples=50, deadline=None)
@given(st.text(max_size=200), st.text(max_size=200))
def test_count_text_is_roughly_additive(a: str, b: str) -> None:
    # BPE is not additive: the seam can merge tokens or split them differently ("^" + "/A" is
    # 1 + 1 tokens apart, 3 together), but only by a few tokens either way.
    joined = count_text(a + b)
    assert joined >= 0
    assert abs(joined - (count_text(a) + count_text(b))) <= 4


def _req(**kw: object) -> ChatRequest:
    base: dict[str, object] = {
        "model": "m",
        "messages": [Message(role="user", content=[TextBlock(text="hello world")])],
    }
    base.update(kw)
    return ChatRequest(**base)  # type: ignore[arg-type]


def test_count_request_one_message() -> None:
    assert count_request(_req()) == tokens.REQUEST_OVERHEAD + tokens.MESSAGE_OVERHEAD + 2


def test_count_request_counts_every_part() -> None:
    base = count_request(_req())
    system = count_request(_req(system=[TextBlock(text="hello world")]))
    assert system == base + tokens.MESSAGE_OVERHEAD + 2

    tool = ToolSpec(name="get_weather", description="hello world", parameters={"type": "object"})
    with_tool = count_request(_req(tools=[tool]))
    params = count_text(msgspec.json.encode({"type": "object"}).decode())
    assert with_tool == base + tokens.TOOL_OVERHEAD + count_text("get_weather") + 2 + params

    msgs = [
        Message(role="user", content=[TextBlock(text="hi"), ImageBlock(url="http://x/a.png")]),
        Message(
            role="assistant",
            content=[ToolUseBlock(id="c1", name="f", input={"a": 1})],
        ),
        Message(
            role="user",
            content=[ToolResultBlock(tool_use_id="c1", content=[TextBlock(text="hello world")])],
        ),
    ]
    expected = (
        tokens.REQUEST_OVERHEAD
        + 3 * tokens.MESSAGE_OVERHEAD
        + count_text("hi")
        + tokens.IMAGE_TOKENS
        + count_text("f")
        + count_text('{"a":1}')
        + 2
    )
    assert count_request(_req(messages=msgs)) == expected


def test_count_request_json_schema_counts() -> None:
    schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    assert count_request(_req(response_format=schema)) > count_request(_req())


def test_count_response() -> None:
    resp = ChatResponse(
        id="r",
        model="m",
        content=[
            ThinkingBlock(thinking="hello world", signature="sig"),
            TextBlock(text="Hello, world!"),
            ToolUseBlock(id="c", name="f", input={}),
        ],
    )
    assert count_response(resp) == 2 + 4 + count_text("f") + count_text("{}")
    assert count_response(ChatResponse(id="r", model="m", content=[])) == 0

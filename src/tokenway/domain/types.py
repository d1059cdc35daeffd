"""Canonical types every stage of tokenway speaks.

A client request in any API (OpenAI chat completions, Anthropic Messages) is parsed into a
`ChatRequest`; adapters encode it for their upstream and decode the answer into a
`ChatResponse` (or a stream of `StreamEvent`s); the gateway encodes that back into the client's
API. The types are a superset of what either client API can say, so translation loses nothing
that the target protocol can carry.

Content blocks are tagged structs: `{"type": "text", "text": ...}` when encoded with msgspec.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

JSON = dict[str, Any]

StopReason = Literal[
    "end_turn", "max_tokens", "tool_use", "stop_sequence", "content_filter", "error"
]


class Usage(msgspec.Struct, kw_only=True):
    """Token usage of one upstream attempt, normalised whatever the provider reported.

    `input_tokens` counts every prompt token, cached ones included; `cache_read_tokens` and
    `cache_write_tokens` are subsets of it, and `cache_write_1h_tokens` is the subset of
    `cache_write_tokens` written with a one-hour TTL. `output_tokens` counts every billed output
    token, reasoning included; `reasoning_tokens` is a subset of it.

    `cache_explicit` says the reads hit a cache the client created explicitly, which some
    providers (Qwen/DashScope) price below an implicit hit; `service_tier` is the tier the
    provider says served the request, which may differ from the one asked for.
    """

    input_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    service_tier: str | None = None
    source: Literal["provider", "estimated"] = "provider"
    cache_explicit: bool = False

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


# ---- content blocks -------------------------------------------------------------------------


class TextBlock(msgspec.Struct, tag="text", kw_only=True):
    text: str
    cache_control: JSON | None = None


class ImageBlock(msgspec.Struct, tag="image", kw_only=True):
    """An image, either inline (`data` is base64 with `media_type`) or by `url`."""

    media_type: str | None = None
    data: str | None = None
    url: str | None = None
    detail: str | None = None
    cache_control: JSON | None = None


class ToolUseBlock(msgspec.Struct, tag="tool_use", kw_only=True):
    """A call the model made. `input` is the parsed arguments object."""

    id: str
    name: str
    input: JSON
    cache_control: JSON | None = None


class ToolResultBlock(msgspec.Struct, tag="tool_result", kw_only=True):
    tool_use_id: str
    content: list[TextBlock | ImageBlock]
    is_error: bool = False
    cache_control: JSON | None = None


class ThinkingBlock(msgspec.Struct, tag="thinking", kw_only=True):
    thinking: str
    signature: str | None = None


class RedactedThinkingBlock(msgspec.Struct, tag="redacted_thinking", kw_only=True):
    data: str


Block = (
    TextBlock | ImageBlock | ToolUseBlock | ToolResultBlock | ThinkingBlock | RedactedThinkingBlock
)


class Message(msgspec.Struct, kw_only=True):
    role: Literal["user", "assistant"]
    content: list[Block]


class ToolSpec(msgspec.Struct, kw_only=True):
    name: str
    description: str | None = None
    parameters: JSON = msgspec.field(default_factory=lambda: {"type": "object", "properties": {}})
    cache_control: JSON | None = None


class ToolChoice(msgspec.Struct, kw_only=True):
    """`auto` (model decides), `none`, `required` (some tool), or `tool` (the one named)."""

    mode: Literal["auto", "none", "required", "tool"] = "auto"
    name: str | None = None
    disable_parallel: bool = False


class ChatRequest(msgspec.Struct, kw_only=True):
    """A chat request in canonical form.

    `response_format` keeps OpenAI's shape (`{"type": "json_object"}` or
    `{"type": "json_schema", "json_schema": {...}}`) since it is the richest of the three.
    `extras` holds fields of the client's protocol that have no canonical meaning; they are
    forwarded only when the upstream speaks that same protocol.
    """

    model: str
    messages: list[Message]
    system: list[TextBlock] = msgspec.field(default_factory=list)
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] = msgspec.field(default_factory=list)
    tools: list[ToolSpec] = msgspec.field(default_factory=list)
    tool_choice: ToolChoice | None = None
    response_format: JSON | None = None
    reasoning_effort: str | None = None
    thinking_budget: int | None = None
    stream: bool = False
    user: str | None = None
    extras: JSON = msgspec.field(default_factory=dict)


class ChatResponse(msgspec.Struct, kw_only=True):
    id: str
    model: str
    content: list[Block]
    stop_reason: StopReason = "end_turn"
    stop_sequence: str | None = None
    usage: Usage = msgspec.field(default_factory=Usage)


# ---- stream events --------------------------------------------------------------------------
# `index` is the canonical content-block index within the response (0, 1, ...). A block starts
# with its first event and ends with `BlockStop` or at `StreamEnd`.


class StreamStart(msgspec.Struct, tag="start", kw_only=True):
    id: str
    model: str


class TextDelta(msgspec.Struct, tag="text_delta", kw_only=True):
    index: int
    text: str


class ThinkingDelta(msgspec.Struct, tag="thinking_delta", kw_only=True):
    index: int
    text: str = ""
    signature: str | None = None


class ToolCallStart(msgspec.Struct, tag="tool_call_start", kw_only=True):
    index: int
    id: str
    name: str


class ToolArgsDelta(msgspec.Struct, tag="tool_args_delta", kw_only=True):
    index: int
    partial_json: str


class BlockStop(msgspec.Struct, tag="block_stop", kw_only=True):
    index: int


class UsageUpdate(msgspec.Struct, tag="usage", kw_only=True):
    """Usage so far. Later updates replace earlier ones field by field where non-zero."""

    usage: Usage


class StreamEnd(msgspec.Struct, tag="end", kw_only=True):
    stop_reason: StopReason = "end_turn"
    stop_sequence: str | None = None


StreamEvent = (
    StreamStart
    | TextDelta
    | ThinkingDelta
    | ToolCallStart
    | ToolArgsDelta
    | BlockStop
    | UsageUpdate
    | StreamEnd
)


# ---- embeddings ----------------------------------------------------------------------------


class EmbeddingRequest(msgspec.Struct, kw_only=True):
    model: str
    input: list[str]
    dimensions: int | None = None
    encoding_format: str | None = None
    extras: JSON = msgspec.field(default_factory=dict)


class EmbeddingResponse(msgspec.Struct, kw_only=True):
    model: str
    vectors: list[list[float]]
    usage: Usage = msgspec.field(default_factory=Usage)


# ---- who is asking --------------------------------------------------------------------------


class Principal(msgspec.Struct, kw_only=True, frozen=True):
    """An authenticated caller: a virtual key's name and what it may do (never its secret)."""

    name: str
    team: str | None = None
    models: frozenset[str] | None = None
    rpm: int | None = None
    tpm: int | None = None
    budget_usd: float | None = None
    plan: str | None = None
    admin: bool = False
    regions: frozenset[str] | None = None
    """Provider regions this key's requests may go to (None: any)."""
    priority: str = "normal"
    """`high`, `normal` or `low`: who goes first when a model is at capacity."""

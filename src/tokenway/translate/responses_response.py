"""Canonical responses -> OpenAI Responses API `Response` objects.

A `Shell` carries what every Response object of one request repeats (its id, creation time,
the model the client named and the request fields it echoes); `encode_response` builds the
whole object for a canonical response, `response_object` the object in any state (the stream
encoder uses it for `in_progress`, `completed`, `incomplete` and `failed`).

Canonical blocks become output items: thinking a `reasoning` item (its text as
`reasoning_text` content, its signature as `encrypted_content`), text a `message` item with
one `output_text` part, a tool use a `function_call` item whose `call_id` is the upstream's
call id. A response cut short by its output limit (or a content filter) is `incomplete`.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from tokenway.domain.types import (
    ChatResponse,
    RedactedThinkingBlock,
    StopReason,
    TextBlock,
    ThinkingBlock,
    ToolUseBlock,
    Usage,
)
from tokenway.translate.responses_items import REDACTED_MARK, SIGNATURE_MARK, new_id

__all__ = [
    "Shell",
    "encode_response",
    "encode_usage",
    "function_call_item",
    "message_item",
    "reasoning_item",
    "response_object",
    "status_of",
]

JSON = dict[str, Any]
_SERVICE_TIERS = frozenset({"auto", "default", "flex", "scale", "priority"})
_json_encode = msgspec.json.encode


class Shell(msgspec.Struct, kw_only=True):
    """What every Response object of one request repeats."""

    id: str
    created_at: int
    model: str
    echo: JSON


def encode_usage(u: Usage) -> JSON:
    """Usage in the Responses shape; cached and cache-write tokens are subsets of the input."""
    return {
        "input_tokens": u.input_tokens,
        "input_tokens_details": {
            "cached_tokens": u.cache_read_tokens,
            "cache_write_tokens": u.cache_write_tokens,
        },
        "output_tokens": u.output_tokens,
        "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
        "total_tokens": u.input_tokens + u.output_tokens,
    }


def status_of(stop: StopReason) -> tuple[str, JSON | None]:
    """The Response status and `incomplete_details` for a canonical stop reason."""
    if stop == "max_tokens":
        return "incomplete", {"reason": "max_output_tokens"}
    if stop == "content_filter":
        return "incomplete", {"reason": "content_filter"}
    return "completed", None


def response_object(
    shell: Shell,
    *,
    status: str,
    output: list[JSON],
    usage: Usage | None = None,
    error: JSON | None = None,
    incomplete: JSON | None = None,
) -> JSON:
    """A Response object in state `status`."""
    tier = usage.service_tier if usage is not None else None
    done = status in ("completed", "incomplete", "failed")
    return {
        "id": shell.id,
        "object": "response",
        "created_at": shell.created_at,
        "status": status,
        "completed_at": max(shell.created_at, int(time.time())) if status == "completed" else None,
        "background": False,
        "error": error,
        "incomplete_details": incomplete,
        "model": shell.model,
        "output": output,
        "service_tier": tier if tier in _SERVICE_TIERS else "default",
        "usage": encode_usage(usage) if usage is not None and done else None,
        **shell.echo,
    }


def message_item(item_id: str, text: str, status: str) -> JSON:
    return {
        "id": item_id,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
    }


def function_call_item(item_id: str, call_id: str, name: str, arguments: str, status: str) -> JSON:
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    }


def reasoning_item(item_id: str, text: str, signature: str | None, status: str) -> JSON:
    item: JSON = {"id": item_id, "type": "reasoning", "status": status, "summary": []}
    if text:
        item["content"] = [{"type": "reasoning_text", "text": text}]
    item["encrypted_content"] = SIGNATURE_MARK + signature if signature else None
    return item


def _arguments(block: ToolUseBlock) -> str:
    raw = block.input.get("_raw_arguments")
    if len(block.input) == 1 and isinstance(raw, str):
        return raw  # the upstream's arguments were not a JSON object: give them back verbatim
    return _json_encode(block.input).decode()


def encode_response(shell: Shell, resp: ChatResponse) -> JSON:
    """The whole Response object for a canonical response."""
    status, incomplete = status_of(resp.stop_reason)
    item_status = "incomplete" if status == "incomplete" else "completed"
    output: list[JSON] = []
    for b in resp.content:
        if isinstance(b, TextBlock):
            output.append(message_item(new_id("msg"), b.text, item_status))
        elif isinstance(b, ToolUseBlock):
            output.append(
                function_call_item(new_id("fc"), b.id, b.name, _arguments(b), item_status)
            )
        elif isinstance(b, ThinkingBlock):
            output.append(reasoning_item(new_id("rs"), b.thinking, b.signature, item_status))
        elif isinstance(b, RedactedThinkingBlock):
            output.append(
                {
                    "id": new_id("rs"),
                    "type": "reasoning",
                    "status": item_status,
                    "summary": [],
                    "encrypted_content": REDACTED_MARK + b.data,
                }
            )
    return response_object(
        shell, status=status, output=output, usage=resp.usage, incomplete=incomplete
    )

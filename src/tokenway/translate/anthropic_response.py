"""Anthropic Messages responses, usage and streams <-> canonical types.

`parse_usage` / `encode_usage` convert usage, `parse_response` / `encode_response` whole bodies;
`StreamDecoder` turns upstream Messages stream events into canonical events and `StreamEncoder`
canonical events into the event sequence the official SDK expects. Import these through
`anthropic_messages`.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

import msgspec

from tokenway.domain.types import (
    Block,
    BlockStop,
    ChatResponse,
    RedactedThinkingBlock,
    StopReason,
    StreamEnd,
    StreamEvent,
    StreamStart,
    TextBlock,
    TextDelta,
    ThinkingBlock,
    ThinkingDelta,
    ToolArgsDelta,
    ToolCallStart,
    ToolUseBlock,
    Usage,
    UsageUpdate,
)
from tokenway.errors import UpstreamError, UpstreamStatus
from tokenway.translate._fields import sub, tok
from tokenway.translate.sse import frame, merge_usage

_TO_STOP: dict[str, StopReason] = {
    "end_turn": "end_turn",
    "max_tokens": "max_tokens",
    "stop_sequence": "stop_sequence",
    "tool_use": "tool_use",
    "pause_turn": "end_turn",
    "refusal": "content_filter",
    "model_context_window_exceeded": "max_tokens",
}
_FROM_STOP: dict[str, str] = {
    "end_turn": "end_turn",
    "max_tokens": "max_tokens",
    "stop_sequence": "stop_sequence",
    "tool_use": "tool_use",
    "content_filter": "refusal",
    "error": "end_turn",
}
_ERROR_STATUS = {
    "overloaded_error": 529,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "invalid_request_error": 400,
}
_SERVICE_TIERS = frozenset({"standard", "priority", "batch"})
_json_encode = msgspec.json.encode


# ---- usage and responses --------------------------------------------------------------------


def parse_usage(u: dict[str, Any]) -> Usage:
    """Normalise an Anthropic `usage` object.

    Anthropic's `input_tokens` excludes cache reads and writes, so the canonical input is their
    sum; the 1-hour share of cache writes comes from `cache_creation`, reasoning from
    `output_tokens_details.thinking_tokens`. Subsets are clamped to their totals.
    """
    if not isinstance(u, dict):
        return Usage()
    read = tok(u.get("cache_read_input_tokens"))
    split = u.get("cache_creation")
    write_1h = tok(sub(split, "ephemeral_1h_input_tokens"))
    if u.get("cache_creation_input_tokens") is None and isinstance(split, dict):
        write = write_1h + tok(split.get("ephemeral_5m_input_tokens"))
    else:
        write = tok(u.get("cache_creation_input_tokens"))
    output = tok(u.get("output_tokens"))
    tier = u.get("service_tier")
    return Usage(
        input_tokens=tok(u.get("input_tokens")) + read + write,
        cache_read_tokens=read,
        cache_write_tokens=write,
        cache_write_1h_tokens=min(write_1h, write),
        output_tokens=output,
        reasoning_tokens=min(tok(sub(u.get("output_tokens_details"), "thinking_tokens")), output),
        service_tier=tier if isinstance(tier, str) else None,
    )


def encode_usage(u: Usage) -> dict[str, Any]:
    """An Anthropic `usage` object for canonical usage (`input_tokens` without cache tokens)."""
    out: dict[str, Any] = {
        "input_tokens": max(u.input_tokens - u.cache_read_tokens - u.cache_write_tokens, 0),
        "cache_creation_input_tokens": u.cache_write_tokens,
        "cache_read_input_tokens": u.cache_read_tokens,
        "cache_creation": {
            "ephemeral_5m_input_tokens": max(u.cache_write_tokens - u.cache_write_1h_tokens, 0),
            "ephemeral_1h_input_tokens": u.cache_write_1h_tokens,
        },
        "output_tokens": u.output_tokens,
    }
    if u.reasoning_tokens:
        out["output_tokens_details"] = {"thinking_tokens": u.reasoning_tokens}
    if u.service_tier in _SERVICE_TIERS:
        out["service_tier"] = u.service_tier
    return out


def parse_response(body: dict[str, Any]) -> ChatResponse:
    """Canonical response from an upstream Messages body. Server-tool blocks are skipped."""
    content: list[Block] = []
    for b in body.get("content") or []:
        kind = b.get("type") if isinstance(b, dict) else None
        if kind == "text":
            content.append(TextBlock(text=str(b.get("text") or "")))
        elif kind == "thinking":
            content.append(
                ThinkingBlock(thinking=str(b.get("thinking") or ""), signature=b.get("signature"))
            )
        elif kind == "redacted_thinking":
            content.append(RedactedThinkingBlock(data=str(b.get("data") or "")))
        elif kind == "tool_use":
            inp = b.get("input")
            content.append(
                ToolUseBlock(
                    id=str(b.get("id") or ""),
                    name=str(b.get("name") or ""),
                    input=inp if isinstance(inp, dict) else {},
                )
            )
    stop = body.get("stop_sequence")
    return ChatResponse(
        id=str(body.get("id") or f"msg_{uuid.uuid4().hex}"),
        model=str(body.get("model") or ""),
        content=content,
        stop_reason=_TO_STOP.get(body.get("stop_reason") or "end_turn", "end_turn"),
        stop_sequence=stop if isinstance(stop, str) else None,
        usage=parse_usage(body.get("usage") or {}),
    )


def _encode_block(b: Block) -> dict[str, Any] | None:
    if isinstance(b, TextBlock):
        return {"type": "text", "text": b.text}
    if isinstance(b, ThinkingBlock):
        return {"type": "thinking", "thinking": b.thinking, "signature": b.signature or ""}
    if isinstance(b, RedactedThinkingBlock):
        return {"type": "redacted_thinking", "data": b.data}
    if isinstance(b, ToolUseBlock):
        return {"type": "tool_use", "id": b.id, "name": b.name, "input": b.input}
    return None  # images and tool results never appear in an assistant answer


def encode_response(resp: ChatResponse, model: str) -> dict[str, Any]:
    """A client-facing Messages body for `resp`, reporting `model`."""
    return {
        "id": resp.id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [e for b in resp.content if (e := _encode_block(b)) is not None],
        "stop_reason": _FROM_STOP[resp.stop_reason],
        "stop_sequence": resp.stop_sequence,
        "usage": encode_usage(resp.usage),
    }


# ---- streams --------------------------------------------------------------------------------


def _stream_error(data: dict[str, Any]) -> UpstreamError:
    err = data.get("error")
    kind = sub(err, "type")
    msg = f"upstream stream error: {sub(err, 'message') or kind or 'unknown'}"
    status = _ERROR_STATUS.get(kind) if isinstance(kind, str) else None
    if status is None:
        return UpstreamError(msg)
    return UpstreamStatus(status, msg, error_type=kind if isinstance(kind, str) else None)


class StreamDecoder:
    """Upstream Messages stream events -> canonical stream events.

    Block indices are renumbered densely because server-tool and redacted-thinking blocks have
    no canonical stream form and are skipped.
    """

    def __init__(self) -> None:
        self._blocks: dict[int, int] = {}
        self._next = 0
        self._stop: StopReason = "end_turn"
        self._stop_sequence: str | None = None
        self._open: set[int] = set()
        self._ended = False

    def feed(self, event: str | None, data: dict[str, Any]) -> list[StreamEvent]:
        """Decode one SSE frame (already JSON-decoded); raises on an upstream `error` event."""
        kind = data.get("type") or event
        if kind == "message_start":
            msg: dict[str, Any] = data.get("message") or {}
            out: list[StreamEvent] = [
                StreamStart(
                    id=str(msg.get("id") or f"msg_{uuid.uuid4().hex}"),
                    model=str(msg.get("model") or ""),
                )
            ]
            if isinstance(msg.get("usage"), dict):
                out.append(UsageUpdate(usage=parse_usage(msg["usage"])))
            return out
        if kind == "content_block_start":
            return self._start(data)
        if kind == "content_block_delta":
            return self._delta(data)
        if kind == "content_block_stop":
            index = self._blocks.get(data.get("index", -1))
            if index is None or index not in self._open:
                return []
            self._open.discard(index)
            return [BlockStop(index=index)]
        if kind == "message_delta":
            delta = data.get("delta") or {}
            if delta.get("stop_reason"):
                self._stop = _TO_STOP.get(delta["stop_reason"], "end_turn")
            if isinstance(delta.get("stop_sequence"), str):
                self._stop_sequence = delta["stop_sequence"]
            if isinstance(data.get("usage"), dict):
                return [UsageUpdate(usage=parse_usage(data["usage"]))]
            return []
        if kind == "message_stop":
            return self.finish()
        if kind == "error":
            raise _stream_error(data)
        return []  # ping and event types added after this was written

    def _start(self, data: dict[str, Any]) -> list[StreamEvent]:
        block = data.get("content_block") or {}
        kind = block.get("type")
        if kind not in ("text", "thinking", "tool_use"):
            return []
        index = self._blocks[data.get("index", -1)] = self._next
        self._next += 1
        self._open.add(index)
        if kind == "text":
            # An empty delta marks the start, so an empty text block still exists downstream.
            return [TextDelta(index=index, text=str(block.get("text") or ""))]
        if kind == "thinking":
            return [ThinkingDelta(index=index, text=str(block.get("thinking") or ""))]
        out: list[StreamEvent] = [
            ToolCallStart(index=index, id=str(block.get("id") or ""), name=str(block.get("name")))
        ]
        if block.get("input"):
            out.append(
                ToolArgsDelta(index=index, partial_json=_json_encode(block["input"]).decode())
            )
        return out

    def _delta(self, data: dict[str, Any]) -> list[StreamEvent]:
        index = self._blocks.get(data.get("index", -1))
        delta = data.get("delta") or {}
        if index is None:
            return []
        kind = delta.get("type")
        if kind == "text_delta":
            return [TextDelta(index=index, text=str(delta.get("text") or ""))]
        if kind == "input_json_delta":
            return [ToolArgsDelta(index=index, partial_json=str(delta.get("partial_json") or ""))]
        if kind == "thinking_delta":
            return [ThinkingDelta(index=index, text=str(delta.get("thinking") or ""))]
        if kind == "signature_delta":
            return [ThinkingDelta(index=index, signature=str(delta.get("signature") or ""))]
        return []  # citations_delta and newer kinds have no canonical form

    def finish(self) -> list[StreamEvent]:
        """At `message_stop` or EOF: stop open blocks and end the stream (once)."""
        if self._ended:
            return []
        self._ended = True
        out: list[StreamEvent] = [BlockStop(index=i) for i in sorted(self._open)]
        self._open.clear()
        out.append(StreamEnd(stop_reason=self._stop, stop_sequence=self._stop_sequence))
        return out


_Kind = Literal["text", "thinking", "tool_use"]


class StreamEncoder:
    """Canonical stream events -> Anthropic Messages SSE events for a client.

    `message_start` is held back until the first content or the end, so usage reported right
    after the start (input tokens) is in it. One block is open at a time: an event for a new
    block closes the previous one; events for an already closed block are dropped.
    """

    def __init__(
        self, model: str, *, include_usage: bool = False, response_id: str | None = None
    ) -> None:
        self._model = model
        self._id = response_id
        self._started = False
        self._usage: Usage | None = None
        self._blocks: dict[int, tuple[int, _Kind]] = {}  # canonical -> (wire index, kind)
        self._open: int | None = None
        self._stop = "end_turn"
        self._stop_sequence: str | None = None
        self._finished = False

    def _start(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        if self._id is None:
            self._id = f"msg_{uuid.uuid4().hex}"
        usage = encode_usage(self._usage or Usage())
        msg: dict[str, Any] = {
            "id": self._id,
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage,
        }
        return frame({"type": "message_start", "message": msg}, "message_start")

    def _close(self) -> bytes:
        if self._open is None:
            return b""
        wire = self._blocks[self._open][0]
        self._open = None
        return frame({"type": "content_block_stop", "index": wire}, "content_block_stop")

    def _open_block(self, index: int, kind: _Kind, block: dict[str, Any]) -> bytes | None:
        """Open canonical block `index` unless known; None when it is closed or of another kind."""
        known = self._blocks.get(index)
        if known is not None:
            return b"" if self._open == index and known[1] == kind else None
        out = self._start() + self._close()
        wire = len(self._blocks)
        self._blocks[index] = (wire, kind)
        self._open = index
        start = {"type": "content_block_start", "index": wire, "content_block": block}
        return out + frame(start, "content_block_start")

    def _delta(self, index: int, delta: dict[str, Any]) -> bytes:
        wire = self._blocks[index][0]
        return frame(
            {"type": "content_block_delta", "index": wire, "delta": delta}, "content_block_delta"
        )

    def encode(self, ev: StreamEvent) -> bytes:
        """SSE bytes for one canonical event (possibly none)."""
        if self._finished:
            return b""
        if isinstance(ev, TextDelta):
            head = self._open_block(ev.index, "text", {"type": "text", "text": ""})
            if head is None or not ev.text:
                return head or b""
            return head + self._delta(ev.index, {"type": "text_delta", "text": ev.text})
        if isinstance(ev, ThinkingDelta):
            empty = {"type": "thinking", "thinking": "", "signature": ""}
            head = self._open_block(ev.index, "thinking", empty)
            if head is None:
                return b""
            if ev.text:
                head += self._delta(ev.index, {"type": "thinking_delta", "thinking": ev.text})
            if ev.signature:
                head += self._delta(
                    ev.index, {"type": "signature_delta", "signature": ev.signature}
                )
            return head
        if isinstance(ev, ToolCallStart):
            block: dict[str, Any] = {"type": "tool_use", "id": ev.id, "name": ev.name, "input": {}}
            return self._open_block(ev.index, "tool_use", block) or b""
        if isinstance(ev, ToolArgsDelta):
            known = self._blocks.get(ev.index)
            if known is None or self._open != ev.index or not ev.partial_json:
                return b""
            return self._delta(
                ev.index, {"type": "input_json_delta", "partial_json": ev.partial_json}
            )
        if isinstance(ev, BlockStop):
            return self._close() if self._open == ev.index else b""
        if isinstance(ev, StreamStart):
            if self._id is None:
                self._id = ev.id
            return b""
        if isinstance(ev, UsageUpdate):
            self._usage = merge_usage(self._usage, ev.usage)
            return b""
        # StreamEnd: the closing events wait for finish(), which may bring the final usage.
        self._stop = _FROM_STOP[ev.stop_reason]
        self._stop_sequence = ev.stop_sequence
        return self._start() + self._close()

    def finish(self, usage: Usage | None = None) -> bytes:
        """Closing events: stop the open block, `message_delta` with usage, `message_stop`."""
        if self._finished:
            return b""
        out = self._start() + self._close()
        self._finished = True
        u = encode_usage(usage or self._usage or Usage())
        u.pop("cache_creation")  # not part of a message_delta's usage
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": self._stop, "stop_sequence": self._stop_sequence},
            "usage": u,
        }
        out += frame(delta, "message_delta")
        return out + frame({"type": "message_stop"}, "message_stop")

    def error(self, message: str, *, error_type: str = "api_error") -> bytes:
        """An in-stream `error` event; the official SDK raises an `APIStatusError` on it."""
        self._finished = True
        return frame({"type": "error", "error": {"type": error_type, "message": message}}, "error")

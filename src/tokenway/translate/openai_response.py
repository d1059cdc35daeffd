"""OpenAI chat completion responses, usage and streams <-> canonical types.

`parse_usage` / `encode_usage` convert usage, `parse_response` / `encode_response` whole bodies;
`StreamDecoder` turns upstream `chat.completion.chunk` frames into canonical events and
`StreamEncoder` canonical events into client SSE bytes. Import these through `openai_chat`.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import msgspec

from tokenway.domain.types import (
    Block,
    BlockStop,
    ChatResponse,
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
from tokenway.errors import UpstreamError
from tokenway.translate._fields import sub, tok
from tokenway.translate.sse import DONE, frame, merge_usage

_FINISH_TO_STOP: dict[str, StopReason] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "content_filter",
}
_STOP_TO_FINISH: dict[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "content_filter": "content_filter",
    "error": "stop",
}
_SERVICE_TIERS = frozenset({"auto", "default", "flex", "scale", "priority"})
_json_decode = msgspec.json.decode
_json_encode = msgspec.json.encode


# ---- usage and responses --------------------------------------------------------------------


def parse_usage(u: dict[str, Any]) -> Usage:
    """Normalise an OpenAI `usage` object (also DeepSeek's and Qwen/DashScope's cache fields).

    `prompt_tokens` already includes cached tokens and `completion_tokens` includes reasoning,
    which is the canonical convention. DashScope's explicit cache adds, inside
    `prompt_tokens_details`, `cache_creation_input_tokens` (a 5-minute cache write; the
    `cache_creation.ephemeral_*` split when the total is missing) and `cache_type: "ephemeral"`,
    which marks `cached_tokens` as explicit hits (explicit and implicit caching never mix in one
    request). Subsets are clamped: reads to the prompt, writes to what reads leave of it.
    """
    if not isinstance(u, dict):
        return Usage()
    prompt = tok(u.get("prompt_tokens"))
    completion = tok(u.get("completion_tokens"))
    details = u.get("prompt_tokens_details")
    cached_raw = sub(details, "cached_tokens")
    if cached_raw is None:
        cached_raw = u.get("prompt_cache_hit_tokens")
    reads = min(tok(cached_raw), prompt)
    writes, writes_1h = _cache_writes(details)
    writes = min(writes, prompt - reads)
    reasoning = tok(sub(u.get("completion_tokens_details"), "reasoning_tokens"))
    return Usage(
        input_tokens=prompt,
        cache_read_tokens=reads,
        cache_write_tokens=writes,
        cache_write_1h_tokens=min(writes_1h, writes),
        output_tokens=completion,
        reasoning_tokens=min(reasoning, completion),
        cache_explicit=sub(details, "cache_type") == "ephemeral",
    )


def _cache_writes(details: Any) -> tuple[int, int]:
    """(all, one-hour) cache-write tokens of DashScope-style `prompt_tokens_details`."""
    split = sub(details, "cache_creation")
    five_min = tok(sub(split, "ephemeral_5m_input_tokens"))
    one_hour = tok(sub(split, "ephemeral_1h_input_tokens"))
    total = sub(details, "cache_creation_input_tokens")
    return (five_min + one_hour if total is None else tok(total)), one_hour


def encode_usage(u: Usage) -> dict[str, Any]:
    """An OpenAI `usage` object for canonical usage (cache writes have no OpenAI field)."""
    return {
        "prompt_tokens": u.input_tokens,
        "completion_tokens": u.output_tokens,
        "total_tokens": u.input_tokens + u.output_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cache_read_tokens},
        "completion_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
    }


def _parse_args(args: Any) -> dict[str, Any]:
    # Upstream arguments may be cut short (finish_reason=length) or not an object: keep the text.
    if not isinstance(args, str) or not args.strip():
        return {}
    try:
        parsed = _json_decode(args)
    except msgspec.DecodeError:
        return {"_raw_arguments": args}
    return parsed if isinstance(parsed, dict) else {"_raw_arguments": args}


def parse_response(body: dict[str, Any]) -> ChatResponse:
    """Canonical response from an upstream's chat completion body (first choice)."""
    choices = body.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    msg = choice.get("message") or {}
    content: list[Block] = []
    reasoning = msg.get("reasoning_content") or msg.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        content.append(ThinkingBlock(thinking=reasoning))
    text = msg.get("content")
    if isinstance(text, list):
        text = "".join(p.get("text", "") for p in text if isinstance(p, dict))
    if isinstance(text, str) and text:
        content.append(TextBlock(text=text))
    refusal = msg.get("refusal")
    if isinstance(refusal, str) and refusal:
        content.append(TextBlock(text=refusal))
    for call in msg.get("tool_calls") or []:
        fn = call.get("function") or {}
        content.append(
            ToolUseBlock(
                id=call.get("id") or f"call_{uuid.uuid4().hex[:24]}",
                name=fn.get("name") or "",
                input=_parse_args(fn.get("arguments")),
            )
        )
    usage = parse_usage(body.get("usage") or {})
    tier = body.get("service_tier")
    if isinstance(tier, str):
        usage.service_tier = tier
    return ChatResponse(
        id=str(body.get("id") or f"chatcmpl-{uuid.uuid4().hex}"),
        model=str(body.get("model") or ""),
        content=content,
        stop_reason=_FINISH_TO_STOP.get(choice.get("finish_reason") or "stop", "end_turn"),
        usage=usage,
    )


def encode_response(resp: ChatResponse, model: str) -> dict[str, Any]:
    """A client-facing `chat.completion` body for `resp`, reporting `model`."""
    texts = [b.text for b in resp.content if isinstance(b, TextBlock)]
    thinking = "".join(b.thinking for b in resp.content if isinstance(b, ThinkingBlock))
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts else None,
        "refusal": None,
    }
    if thinking:
        message["reasoning_content"] = thinking
    calls = [
        {
            "id": b.id,
            "type": "function",
            "function": {"name": b.name, "arguments": _json_encode(b.input).decode()},
        }
        for b in resp.content
        if isinstance(b, ToolUseBlock)
    ]
    if calls:
        message["tool_calls"] = calls
    out: dict[str, Any] = {
        "id": resp.id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": _STOP_TO_FINISH[resp.stop_reason],
                "logprobs": None,
            }
        ],
        "usage": encode_usage(resp.usage),
    }
    if resp.usage.service_tier in _SERVICE_TIERS:
        out["service_tier"] = resp.usage.service_tier
    return out


# ---- streams --------------------------------------------------------------------------------


class StreamDecoder:
    """Upstream `chat.completion.chunk` frames -> canonical stream events.

    Text, reasoning and each tool call (by its `tool_calls[].index`) get their own canonical
    block index in order of first appearance; the previous block is stopped when another starts.
    `StreamEnd` waits for `finish()` because the usage chunk follows the finish reason.
    """

    def __init__(self) -> None:
        self._started = False
        self._ended = False
        self._next = 0
        self._open: int | None = None
        self._text: int | None = None
        self._thinking: int | None = None
        self._tools: dict[int, int] = {}
        self._stop: StopReason = "end_turn"
        self._tier: str | None = None

    def _switch(self, index: int | None, out: list[StreamEvent]) -> int:
        """Make `index` (or a new block when None) the open block; returns its index."""
        if index is None:
            index, self._next = self._next, self._next + 1
        if self._open is not None and self._open != index:
            out.append(BlockStop(index=self._open))
        self._open = index
        return index

    def feed(self, event: str | None, data: dict[str, Any]) -> list[StreamEvent]:
        """Decode one SSE frame (already JSON-decoded)."""
        out: list[StreamEvent] = []
        err = data.get("error")
        if err:
            msg = err.get("message") if isinstance(err, dict) else str(err)
            raise UpstreamError(f"upstream stream error: {msg or 'unknown'}")
        if not self._started:
            self._started = True
            out.append(
                StreamStart(
                    id=str(data.get("id") or f"chatcmpl-{uuid.uuid4().hex}"),
                    model=str(data.get("model") or ""),
                )
            )
        for choice in data.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            self._delta(choice.get("delta") or {}, out)
            if choice.get("finish_reason"):
                self._stop = _FINISH_TO_STOP.get(choice["finish_reason"], "end_turn")
        if isinstance(data.get("service_tier"), str):
            # every chunk may carry it; the usage chunk of some upstreams omits it
            self._tier = data["service_tier"]
        if isinstance(data.get("usage"), dict):
            usage = parse_usage(data["usage"])
            usage.service_tier = self._tier
            out.append(UsageUpdate(usage=usage))
        return out

    def _delta(self, delta: dict[str, Any], out: list[StreamEvent]) -> None:
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            if self._thinking is None or self._open != self._thinking:
                self._thinking = self._switch(None, out)
            out.append(ThinkingDelta(index=self._thinking, text=reasoning))
        text = delta.get("content")
        if isinstance(text, str) and text:
            if self._text is None or self._open != self._text:
                self._text = self._switch(None, out)
            out.append(TextDelta(index=self._text, text=text))
        for pos, call in enumerate(delta.get("tool_calls") or []):
            tool_index = call.get("index", pos)
            fn = call.get("function") or {}
            block = self._tools.get(tool_index)
            if block is None:
                block = self._tools[tool_index] = self._switch(None, out)
                out.append(
                    ToolCallStart(
                        index=block,
                        id=call.get("id") or f"call_{uuid.uuid4().hex[:24]}",
                        name=fn.get("name") or "",
                    )
                )
            elif self._open != block:
                self._switch(block, out)
            args = fn.get("arguments")
            if isinstance(args, str) and args:
                out.append(ToolArgsDelta(index=block, partial_json=args))

    def finish(self) -> list[StreamEvent]:
        """At `[DONE]` or EOF: stop the open block and end the stream (once)."""
        if self._ended:
            return []
        self._ended = True
        out: list[StreamEvent] = []
        if self._open is not None:
            out.append(BlockStop(index=self._open))
            self._open = None
        out.append(StreamEnd(stop_reason=self._stop))
        return out


class StreamEncoder:
    """Canonical stream events -> OpenAI `chat.completion.chunk` SSE frames for a client."""

    def __init__(
        self, model: str, *, include_usage: bool = False, response_id: str | None = None
    ) -> None:
        self._model = model
        self._include_usage = include_usage
        self._id = response_id
        self._created = int(time.time())
        self._role_sent = False
        self._tools: dict[int, int] = {}
        self._usage: Usage | None = None
        self._ended = False
        self._finished = False

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        if self._id is None:
            self._id = f"chatcmpl-{uuid.uuid4().hex}"
        if not self._role_sent:
            self._role_sent = True
            delta = {"role": "assistant", **delta}
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        return frame(
            {
                "id": self._id,
                "object": "chat.completion.chunk",
                "created": self._created,
                "model": self._model,
                "choices": [choice],
            }
        )

    def encode(self, ev: StreamEvent) -> bytes:
        """SSE bytes for one canonical event (often none, e.g. for `BlockStop`)."""
        if self._ended:
            return b""
        if isinstance(ev, TextDelta):
            return self._chunk({"content": ev.text}) if ev.text else b""
        if isinstance(ev, ThinkingDelta):
            return self._chunk({"reasoning_content": ev.text}) if ev.text else b""
        if isinstance(ev, ToolCallStart):
            tool_index = self._tools[ev.index] = len(self._tools)
            call = {
                "index": tool_index,
                "id": ev.id,
                "type": "function",
                "function": {"name": ev.name, "arguments": ""},
            }
            return self._chunk({"tool_calls": [call]})
        if isinstance(ev, ToolArgsDelta):
            if ev.index not in self._tools or not ev.partial_json:
                return b""
            call = {"index": self._tools[ev.index], "function": {"arguments": ev.partial_json}}
            return self._chunk({"tool_calls": [call]})
        if isinstance(ev, StreamStart):
            if self._id is None:
                self._id = ev.id
            return b"" if self._role_sent else self._chunk({"content": ""})
        if isinstance(ev, UsageUpdate):
            self._usage = merge_usage(self._usage, ev.usage)
            return b""
        if isinstance(ev, StreamEnd):
            self._ended = True
            return self._chunk({}, _STOP_TO_FINISH[ev.stop_reason])
        return b""  # BlockStop: OpenAI chunks have no block boundaries

    def finish(self, usage: Usage | None = None) -> bytes:
        """Closing frames: the finish chunk if not sent, the usage chunk if asked, `[DONE]`."""
        if self._finished:
            return b""
        self._finished = True
        out = b"" if self._ended else self._chunk({}, "stop")
        self._ended = True
        if self._include_usage:
            u = usage or self._usage or Usage()
            out += frame(
                {
                    "id": self._id,
                    "object": "chat.completion.chunk",
                    "created": self._created,
                    "model": self._model,
                    "choices": [],
                    "usage": encode_usage(u),
                }
            )
        return out + DONE

    def error(self, message: str, *, error_type: str = "api_error") -> bytes:
        """An in-stream error frame; the official SDK raises `APIError` on it."""
        self._finished = self._ended = True
        return frame(
            {"error": {"message": message, "type": error_type, "param": None, "code": None}}
        )

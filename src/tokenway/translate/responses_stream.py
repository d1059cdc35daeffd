"""Canonical stream events -> OpenAI Responses API server-sent events.

The sequence is the one the official SDK's stream accumulator checks, every event with its
`sequence_number`:

    response.created, response.in_progress
    per output item, in order:
      response.output_item.added
      message:        response.content_part.added, response.output_text.delta ...,
                      response.output_text.done, response.content_part.done
      function_call:  response.function_call_arguments.delta ..., .done
      reasoning:      response.reasoning_text.delta ..., .done
      response.output_item.done
    response.completed (or response.incomplete when cut short by the output limit), with usage

and on an upstream failure after the stream started: `error`, then `response.failed`.

One output item is open at a time. An item is closed when the next one opens or the stream
ends (not at the canonical `BlockStop`), so that the last item's status can say whether the
output limit cut it short, which some upstreams report only after their last block ended.
Events for a block already closed are dropped.
"""

from __future__ import annotations

from typing import Any, Literal

from tokenway.domain.types import (
    StopReason,
    StreamEnd,
    StreamEvent,
    TextDelta,
    ThinkingDelta,
    ToolArgsDelta,
    ToolCallStart,
    Usage,
    UsageUpdate,
)
from tokenway.translate.responses_items import new_id
from tokenway.translate.responses_response import (
    Shell,
    function_call_item,
    message_item,
    reasoning_item,
    response_object,
    status_of,
)
from tokenway.translate.sse import frame, merge_usage

__all__ = ["StreamEncoder"]

JSON = dict[str, Any]
_Kind = Literal["message", "function_call", "reasoning"]


class _Item:
    """An output item being streamed: its kind, ids and the text accumulated so far."""

    __slots__ = ("call_id", "id", "kind", "name", "output_index", "parts", "signature")

    def __init__(self, kind: _Kind, output_index: int, call_id: str = "", name: str = "") -> None:
        self.kind = kind
        self.output_index = output_index
        self.id = new_id({"message": "msg", "function_call": "fc", "reasoning": "rs"}[kind])
        self.call_id = call_id
        self.name = name
        self.parts: list[str] = []
        self.signature: str | None = None

    def shape(self, status: str) -> JSON:
        text = "".join(self.parts)
        if self.kind == "message":
            return message_item(self.id, text, status)
        if self.kind == "function_call":
            return function_call_item(self.id, self.call_id, self.name, text, status)
        return reasoning_item(self.id, text, self.signature, status)


class StreamEncoder:
    """Canonical events -> Responses SSE bytes for one response; `final` is the last
    Response object sent (completed, incomplete or failed), for storage."""

    def __init__(self, shell: Shell) -> None:
        self._shell = shell
        self._seq = 0
        self._started = False
        self._finished = False
        self._items: list[_Item] = []
        self._done: dict[int, JSON] = {}  # output index -> the item as output_item.done said
        self._blocks: dict[int, _Item] = {}  # canonical block index -> its item
        self._open: _Item | None = None
        self._stop: StopReason = "end_turn"
        self._usage: Usage | None = None
        self.final: JSON | None = None

    def _event(self, kind: str, fields: JSON) -> bytes:
        data = {"type": kind, **fields, "sequence_number": self._seq}
        self._seq += 1
        return frame(data, kind)

    def _start(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        shell = response_object(self._shell, status="in_progress", output=[])
        return self._event("response.created", {"response": shell}) + self._event(
            "response.in_progress", {"response": shell}
        )

    def _ids(self, item: _Item) -> JSON:
        return {"item_id": item.id, "output_index": item.output_index}

    def _open_item(self, index: int, kind: _Kind, call_id: str = "", name: str = "") -> bytes:
        out = self._close()
        item = _Item(kind, len(self._items), call_id, name)
        self._items.append(item)
        self._blocks[index] = item
        self._open = item
        added = {"output_index": item.output_index, "item": item.shape("in_progress")}
        out += self._event("response.output_item.added", added)
        if kind == "message":
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            out += self._event(
                "response.content_part.added", {**self._ids(item), "content_index": 0, "part": part}
            )
        return out

    def _item(self, index: int, kind: _Kind) -> tuple[_Item | None, bytes]:
        """The open item of canonical block `index`, opening it if new; None if it is closed
        or of another kind."""
        item = self._blocks.get(index)
        if item is None:
            head = self._open_item(index, kind)
            return self._open, head
        return (item if item is self._open and item.kind == kind else None), b""

    def _close(self, status: str = "completed") -> bytes:
        item, self._open = self._open, None
        if item is None:
            return b""
        text = "".join(item.parts)
        ids = self._ids(item)
        out = b""
        if item.kind == "message":
            part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
            out += self._event(
                "response.output_text.done",
                {**ids, "content_index": 0, "text": text, "logprobs": []},
            )
            out += self._event(
                "response.content_part.done", {**ids, "content_index": 0, "part": part}
            )
        elif item.kind == "function_call":
            out += self._event(
                "response.function_call_arguments.done",
                {**ids, "name": item.name, "arguments": text},
            )
        elif text:
            out += self._event(
                "response.reasoning_text.done", {**ids, "content_index": 0, "text": text}
            )
        shape = item.shape(status)
        self._done[item.output_index] = shape
        done = {"output_index": item.output_index, "item": shape}
        return out + self._event("response.output_item.done", done)

    def encode(self, ev: StreamEvent) -> bytes:
        """SSE bytes for one canonical event (possibly none)."""
        if self._finished:
            return b""
        out = self._start()
        if isinstance(ev, TextDelta):
            item, head = self._item(ev.index, "message")
            out += head
            if item is not None and ev.text:
                item.parts.append(ev.text)
                out += self._event(
                    "response.output_text.delta",
                    {**self._ids(item), "content_index": 0, "delta": ev.text, "logprobs": []},
                )
        elif isinstance(ev, ThinkingDelta):
            item, head = self._item(ev.index, "reasoning")
            out += head
            if item is not None:
                if ev.signature:
                    item.signature = ev.signature
                if ev.text:
                    item.parts.append(ev.text)
                    out += self._event(
                        "response.reasoning_text.delta",
                        {**self._ids(item), "content_index": 0, "delta": ev.text},
                    )
        elif isinstance(ev, ToolCallStart):
            if ev.index not in self._blocks:
                out += self._open_item(ev.index, "function_call", ev.id, ev.name)
        elif isinstance(ev, ToolArgsDelta):
            item = self._blocks.get(ev.index)
            if item is self._open and item is not None and ev.partial_json:
                item.parts.append(ev.partial_json)
                out += self._event(
                    "response.function_call_arguments.delta",
                    {**self._ids(item), "delta": ev.partial_json},
                )
        elif isinstance(ev, UsageUpdate):
            self._usage = merge_usage(self._usage, ev.usage)
        elif isinstance(ev, StreamEnd):
            self._stop = ev.stop_reason
        return out

    def _output(self, open_status: str) -> list[JSON]:
        return [
            self._done.get(item.output_index) or item.shape(open_status) for item in self._items
        ]

    def finish(self, usage: Usage | None = None) -> bytes:
        """Close the open item and send `response.completed` (or `.incomplete`) with usage."""
        if self._finished:
            return b""
        status, incomplete = status_of(self._stop)
        item_status = "incomplete" if status == "incomplete" else "completed"
        out = self._start() + self._close(item_status)
        self._finished = True
        self.final = response_object(
            self._shell,
            status=status,
            output=self._output(item_status),
            usage=usage or self._usage or Usage(),
            incomplete=incomplete,
        )
        kind = "response.completed" if status == "completed" else "response.incomplete"
        return out + self._event(kind, {"response": self.final})

    def error(self, message: str, *, error_type: str = "api_error") -> bytes:
        """`error` then `response.failed`: the upstream failed after the stream started.
        Items still open are left unfinished (status `incomplete`) in the failed response."""
        if self._finished:
            return b""
        out = self._start()
        self._finished = True
        code = "server_error" if error_type == "api_error" else error_type
        out += self._event("error", {"code": code, "message": message, "param": None})
        self.final = response_object(
            self._shell,
            status="failed",
            output=self._output("incomplete"),
            usage=self._usage,
            error={"code": code, "message": message},
        )
        return out + self._event("response.failed", {"response": self.final})

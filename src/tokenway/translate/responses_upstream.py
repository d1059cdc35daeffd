"""The Responses API of an upstream that speaks it (`providers[].responses`): what tokenway reads
of its answers, and how it makes them its own.

The client's body goes up with little changed (gateway/responses.py says what and why) and the
answer comes back with little changed:

- `parse_usage` reads a Response's `usage` (`input_tokens` with its cached subset,
  `output_tokens` with its reasoning subset) into the one `Usage` record;
- `StreamDecoder` turns the upstream's events into canonical stream events, for accounting,
  first-content detection and estimating a stream cut short, while the bytes are relayed;
- `Relay` restamps the state fields of every Response object the client sees (`id`, `store`,
  `previous_response_id`: the conversation is tokenway's, not the upstream's), keeps the final
  one for the store, and ends a stream cut short with `error` and `response.failed`, numbered
  after the upstream's last event;
- `replay` turns a stored conversation into input items for an upstream that kept none of it.
"""

from __future__ import annotations

from typing import Any

import msgspec

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
from tokenway.errors import UpstreamStreamCut
from tokenway.translate._fields import sub, tok
from tokenway.translate.responses_items import REDACTED_MARK, SIGNATURE_MARK
from tokenway.translate.responses_response import Shell, response_object
from tokenway.translate.sse import frame as sse_frame

__all__ = ["Relay", "StreamDecoder", "parse_usage", "replay"]

JSON = dict[str, Any]
_decode = msgspec.json.decode
_encode = msgspec.json.encode

# Events that carry the whole Response object; the last three end a stream.
_STATE_EVENTS = frozenset(
    {
        "response.created",
        "response.queued",
        "response.in_progress",
        "response.completed",
        "response.incomplete",
        "response.failed",
    }
)
_FINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})
_TEXT_DELTAS = frozenset({"response.output_text.delta", "response.refusal.delta"})
_THINKING_DELTAS = frozenset(
    {"response.reasoning_text.delta", "response.reasoning_summary_text.delta"}
)


def parse_usage(doc: JSON) -> Usage:
    """The usage of a Response object (or of any object with its `usage` and `service_tier`).

    `input_tokens` includes the cached ones and `output_tokens` the reasoning ones, which is
    the canonical convention; subsets are clamped to their totals.
    """
    u = doc.get("usage")
    tier = doc.get("service_tier")
    service_tier = tier if isinstance(tier, str) else None
    if not isinstance(u, dict):
        return Usage(service_tier=service_tier)
    prompt = tok(u.get("input_tokens"))
    output = tok(u.get("output_tokens"))
    details = u.get("input_tokens_details")
    reads = min(tok(sub(details, "cached_tokens")), prompt)
    # not OpenAI's, but what tokenway itself reports: a tokenway in front of a tokenway
    writes = min(tok(sub(details, "cache_write_tokens")), prompt - reads)
    reasoning = tok(sub(u.get("output_tokens_details"), "reasoning_tokens"))
    return Usage(
        input_tokens=prompt,
        cache_read_tokens=reads,
        cache_write_tokens=writes,
        output_tokens=output,
        reasoning_tokens=min(reasoning, output),
        service_tier=service_tier,
    )


def _stop_reason(resp: Any) -> StopReason:
    if not isinstance(resp, dict):
        return "end_turn"
    reason = sub(resp.get("incomplete_details"), "reason")
    if reason == "max_output_tokens":
        return "max_tokens"
    if reason == "content_filter":
        return "content_filter"
    output = resp.get("output")
    if isinstance(output, list) and any(sub(i, "type") == "function_call" for i in output):
        return "tool_use"
    return "end_turn"


class StreamDecoder:
    """Upstream Responses events -> canonical stream events (one block per output index).

    An upstream failure (`error`, `response.failed`) is the gateway's to detect before the
    decoder sees it (gateway/chat.py); a stream that ends without `response.completed` or
    `response.incomplete` was cut short, and `finish` says so.
    """

    def __init__(self) -> None:
        self._ended = False

    def feed(self, event: str | None, data: JSON) -> list[StreamEvent]:
        """Decode one event (already JSON-decoded)."""
        kind = data.get("type") or event
        index = data.get("output_index")
        if not isinstance(index, int):
            index = 0
        delta = data.get("delta")
        if kind in _TEXT_DELTAS and isinstance(delta, str):
            return [TextDelta(index=index, text=delta)]
        if kind in _THINKING_DELTAS and isinstance(delta, str):
            return [ThinkingDelta(index=index, text=delta)]
        if kind == "response.function_call_arguments.delta" and isinstance(delta, str):
            return [ToolArgsDelta(index=index, partial_json=delta)]
        if kind == "response.output_item.added":
            item = data.get("item")
            if sub(item, "type") == "function_call":
                call_id, name = sub(item, "call_id"), sub(item, "name")
                return [ToolCallStart(index=index, id=str(call_id or ""), name=str(name or ""))]
            return []
        if kind in ("response.completed", "response.incomplete"):
            self._ended = True
            resp = data.get("response")
            usage = parse_usage(resp) if isinstance(resp, dict) else Usage()
            return [UsageUpdate(usage=usage), StreamEnd(stop_reason=_stop_reason(resp))]
        return []

    def finish(self) -> list[StreamEvent]:
        """At the end of the upstream's stream."""
        if not self._ended:
            raise UpstreamStreamCut("the upstream's stream ended before its response completed")
        return []


class Relay:
    """An upstream's Response objects and events, as tokenway's client gets them.

    Every Response object the client sees gets the shell's `id`, `store` and
    `previous_response_id`: ids are tokenway's (the store is keyed by them, and an upstream
    chooses its ids freely), and the upstream was asked to store nothing and never saw the
    client's `previous_response_id`. `final` is the last Response object sent.
    """

    def __init__(self, shell: Shell) -> None:
        self._shell = shell
        self._seq = -1
        self._snapshot: JSON | None = None
        self._done: dict[int, JSON] = {}
        self._wholes: list[tuple[bytes, JSON]] = []
        self.final: JSON | None = None

    def _restamp(self, resp: JSON) -> JSON:
        echo = self._shell.echo
        resp["id"] = self._shell.id
        resp["store"] = echo["store"]
        resp["previous_response_id"] = echo["previous_response_id"]
        return resp

    def whole(self, data: bytes) -> bytes:
        """A whole Response from the upstream, as the client gets it."""
        doc = _decode(data)
        if not isinstance(doc, dict):
            raise ValueError("the upstream's response is not an object")
        out = _encode(self._restamp(doc))
        # Racing attempts may each get this far: `final_of` later picks the one sent.
        self._wholes.append((out, doc))
        return out

    def final_of(self, body: bytes) -> JSON | None:
        """The Response object `whole` made `body` from, if it made it."""
        for out, doc in self._wholes:
            if out is body:
                return doc
        return None

    def frame(self, raw: bytes, doc: JSON | None) -> bytes:
        """One upstream event frame (`doc` its JSON), as the client gets it."""
        if doc is None:
            return raw
        seq = doc.get("sequence_number")
        if isinstance(seq, int):
            self._seq = seq
        kind = doc.get("type")
        if kind == "response.output_item.done":
            index, item = doc.get("output_index"), doc.get("item")
            if isinstance(index, int) and isinstance(item, dict):
                self._done[index] = item
            return raw
        resp = doc.get("response")
        if kind not in _STATE_EVENTS or not isinstance(resp, dict):
            return raw
        self._restamp(resp)
        if kind in _FINAL_EVENTS:
            self.final = resp
        else:
            self._snapshot = resp
        return sse_frame(doc, kind)

    def error(self, message: str) -> bytes:
        """`error` then `response.failed`: the upstream failed after the stream started. The
        failed response holds the output items that were finished."""
        code = "server_error"
        base = self._snapshot or response_object(self._shell, status="in_progress", output=[])
        self.final = {
            **base,
            "status": "failed",
            "completed_at": None,
            "error": {"code": code, "message": message},
            "output": [self._done[i] for i in sorted(self._done)],
            "usage": None,
        }
        err = {"type": "error", "code": code, "message": message, "param": None}
        out = sse_frame({**err, "sequence_number": self._seq + 1}, "error")
        failed = {"type": "response.failed", "response": self.final}
        out += sse_frame({**failed, "sequence_number": self._seq + 2}, "response.failed")
        self._seq += 2
        return out


def replay(items: list[JSON]) -> list[JSON]:
    """Stored conversation items (input items, then output items, as the store keeps them) as
    input for an upstream that stored none of them.

    Input messages lose the ids tokenway gave them (the API takes none on input messages);
    a reasoning item goes only with the upstream's own `encrypted_content` (one without it
    could only be found by id in a store the upstream was asked not to keep, and tokenway's
    own marks mean nothing to it), so it is dropped otherwise, as a chat upstream drops it.
    """
    out: list[JSON] = []
    for item in items:
        kind = item.get("type")
        if kind == "message" and item.get("role") != "assistant":
            out.append({k: v for k, v in item.items() if k != "id"})
        elif kind == "reasoning":
            sealed = item.get("encrypted_content")
            if (
                isinstance(sealed, str)
                and sealed
                and not sealed.startswith((SIGNATURE_MARK, REDACTED_MARK))
            ):
                out.append(item)
        else:
            out.append(item)
    return out

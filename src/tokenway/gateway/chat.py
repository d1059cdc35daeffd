"""Chat requests (OpenAI chat completions and Anthropic Messages), whole and streamed.

Whichever API the client speaks, the request goes to the model's targets in order. Same
protocol on both sides (the upstream's kind, or another protocol it speaks: `Upstream.native`):
the client's body goes up with only the model rewritten and the upstream's bytes come back
untouched, but for what the client API's `relay` adjusts. Different protocols: the canonical
types translate.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec

from tokenway.domain.types import (
    ChatRequest,
    StreamEnd,
    StreamEvent,
    TextDelta,
    ThinkingDelta,
    ToolArgsDelta,
    ToolCallStart,
    Usage,
    UsageUpdate,
)
from tokenway.errors import (
    BadRequest,
    TargetUnsuitable,
    UpstreamError,
    UpstreamStatus,
    UpstreamStreamCut,
)
from tokenway.execution.failover import Target, run
from tokenway.execution.retry import Deadline
from tokenway.gateway.apis import ClientApi
from tokenway.gateway.asgi import Headers, Receive, Send, respond
from tokenway.gateway.context import RequestContext
from tokenway.providers.adapters import Decoder, Prepared
from tokenway.providers.h1 import H1Response
from tokenway.providers.transport import SseFrame, iter_sse, map_exception
from tokenway.telemetry.log import redact
from tokenway.tokens import count_text
from tokenway.translate.sse import merge_usage

_decode = msgspec.json.decode
_encode = msgspec.json.encode
_STREAM_ERRORS = (
    TimeoutError,
    UpstreamError,
    OSError,
    msgspec.DecodeError,
    ValueError,
    KeyError,
    TypeError,
    AttributeError,
    IndexError,
    RecursionError,
)
# An upstream body we cannot make sense of, whatever the parser tripped on.
BODY_ERRORS = (
    msgspec.DecodeError,
    ValueError,
    KeyError,
    TypeError,
    AttributeError,
    IndexError,
    RecursionError,
)


class UsageOnly(msgspec.Struct):
    """The only fields a same-protocol answer is read for; the rest passes through unparsed."""

    usage: dict[str, Any] | None = None
    service_tier: str | None = None


usage_only = msgspec.json.Decoder(UsageOnly)


def prepare(
    t: Target, api: ClientApi, req: ChatRequest, raw: dict[str, Any], fwd: dict[str, str]
) -> Prepared:
    """The upstream request for target `t`, or `TargetUnsuitable` if it cannot be expressed."""
    native = t.upstream.native.get(api.protocol)
    try:
        if native is not None:
            return native.chat(req, raw, t.model, fwd)
        return t.upstream.adapter.chat(req, None, t.model, {})
    except BadRequest as exc:
        raise TargetUnsuitable(f"{t.upstream.name}: {exc.message}") from None


_CONTENT = (TextDelta, ThinkingDelta, ToolCallStart, ToolArgsDelta, StreamEnd)


def served_headers(ctx: RequestContext, extra: Headers) -> Headers:
    return [
        (b"x-tokenway-request-id", ctx.request_id.encode()),
        (b"x-tokenway-provider", (ctx.provider or "").encode()),
        (b"x-tokenway-model", (ctx.provider_model or "").encode("utf-8", "replace")),
        (b"x-tokenway-attempts", str(len(ctx.attempts)).encode()),
        *extra,
    ]


async def complete(
    ctx: RequestContext,
    api: ClientApi,
    req: ChatRequest,
    raw: dict[str, Any],
    fwd: dict[str, str],
    targets: list[Target],
    send: Send,
    extra_headers: Headers,
    deadline: Deadline,
    tokens: int = 0,
    hedge_after_s: float | None = None,
) -> None:
    """A whole (non-streamed) chat request."""

    async def attempt(t: Target, left: float) -> bytes:
        up = t.upstream
        native = up.native.get(api.protocol)
        prep = prepare(t, api, req, raw, fwd)
        started = time.perf_counter()
        try:
            async with asyncio.timeout(left):
                resp = await up.send(prep, t.label)
                try:
                    data = await resp.read()
                finally:
                    resp.release()
        except UpstreamError as err:
            ctx.attempt_failed(up.name, t.model, err, started, None)
            raise
        except (TimeoutError, OSError) as exc:
            failure = map_exception(exc)
            ctx.attempt_failed(up.name, t.model, failure, started, None)
            raise failure from None
        except asyncio.CancelledError:
            ctx.attempt_cancelled(up.name, t.model, started, None, ctx.rt.estimate_prompt(req))
            raise
        try:
            if native is not None:
                head = usage_only.decode(data)
                doc = {"usage": head.usage, "service_tier": head.service_tier}
                usage = native.parse_usage(doc)
                out = data if api.relay is None else api.relay.whole(data)
            else:
                doc = _decode(data)
                if not isinstance(doc, dict):
                    raise ValueError("not an object")
                cr = up.adapter.parse_response(doc, t.model)
                usage, out = cr.usage, _encode(api.encode_response(cr, ctx.model))
        except BODY_ERRORS as exc:
            failure = map_exception(exc)
            ctx.attempt_failed(up.name, t.model, failure, started, None)
            raise failure from None
        cost = ctx.attempt_ok(up.name, t.model, usage, started, None)
        extra_headers.append((b"x-tokenway-cost-usd", f"{cost:.9f}".encode()))
        return out

    body = await run(targets, attempt, ctx.rt.routing, deadline, tokens, hedge_after_s)
    await respond(
        send,
        200,
        body,
        [(b"content-type", b"application/json"), *served_headers(ctx, extra_headers)],
    )
    ctx.finish(200, "OK")


class _Opened:
    """An upstream stream that has produced its first content, not yet sent to the client."""

    __slots__ = ("decoder", "frames", "pending", "resp", "started", "target")

    def __init__(
        self,
        target: Target,
        resp: H1Response,
        frames: Any,
        decoder: Decoder,
        pending: list[tuple[SseFrame, dict[str, Any] | None, list[StreamEvent]]],
        started: float,
    ) -> None:
        self.target = target
        self.resp = resp
        self.frames = frames
        self.decoder = decoder
        self.pending = pending
        self.started = started


def _frame_events(
    decoder: Decoder, frame: SseFrame
) -> tuple[dict[str, Any] | None, list[StreamEvent]]:
    if frame.data == b"[DONE]":
        return None, []
    doc = _decode(frame.data)
    if not isinstance(doc, dict):
        return None, []
    kind = doc.get("type")
    if (
        frame.event == "error"
        or kind == "error"
        or ("error" in doc and "choices" not in doc and "candidates" not in doc)
    ):
        err = doc.get("error")
        # a Responses `error` event carries its message at the top
        msg = err.get("message") if isinstance(err, dict) else doc.get("message")
        raise UpstreamStatus(502, redact(str(msg or "upstream stream error")))
    if kind == "response.failed":
        resp = doc.get("response")
        err = resp.get("error") if isinstance(resp, dict) else None
        msg = err.get("message") if isinstance(err, dict) else None
        raise UpstreamStatus(502, redact(str(msg or "the upstream's response failed")))
    return doc, decoder.feed(frame.event, doc)


async def stream(
    ctx: RequestContext,
    api: ClientApi,
    req: ChatRequest,
    raw: dict[str, Any],
    fwd: dict[str, str],
    targets: list[Target],
    send: Send,
    receive: Receive,
    extra_headers: Headers,
    deadline: Deadline,
    tokens: int = 0,
    hedge_after_s: float | None = None,
) -> None:
    """A streamed chat request: fail over until an upstream yields content, then relay it.
    The deadline bounds the time to first content; the relay itself is not cut short."""
    ctx.stream = True

    async def attempt(t: Target, left: float) -> _Opened:
        up = t.upstream
        prep = prepare(t, api, req, raw, fwd)
        started = time.perf_counter()
        usage: Usage | None = None
        try:
            async with asyncio.timeout(left):
                resp = await up.send(prep, t.label)
        except UpstreamError as err:
            ctx.attempt_failed(up.name, t.model, err, started, None)
            raise
        except TimeoutError as exc:
            failure = map_exception(exc)
            ctx.attempt_failed(up.name, t.model, failure, started, None)
            raise failure from None
        except asyncio.CancelledError:
            ctx.attempt_cancelled(up.name, t.model, started, None, ctx.rt.estimate_prompt(req))
            raise
        decoder = (up.native.get(api.protocol) or up.adapter).decoder(t.model)
        frames = iter_sse(resp).__aiter__()
        pending: list[tuple[SseFrame, dict[str, Any] | None, list[StreamEvent]]] = []
        try:
            async with asyncio.timeout(max(deadline.left(), 0.001)):
                async for frame in frames:
                    doc, evs = _frame_events(decoder, frame)
                    pending.append((frame, doc, evs))
                    for ev in evs:
                        if isinstance(ev, UsageUpdate):
                            usage = merge_usage(usage, ev.usage)
                    if any(isinstance(ev, _CONTENT) for ev in evs) or frame.data == b"[DONE]":
                        return _Opened(t, resp, frames, decoder, pending, started)
                evs = decoder.finish()
            pending.append((SseFrame(event=None, data=b"", raw=b""), None, evs))
            return _Opened(t, resp, frames, decoder, pending, started)
        except asyncio.CancelledError:
            resp.release()
            ctx.attempt_cancelled(up.name, t.model, started, usage, ctx.rt.estimate_prompt(req))
            raise
        except _STREAM_ERRORS as exc:
            resp.release()
            failure = map_exception(exc)
            if isinstance(failure, UpstreamStreamCut):
                # Nothing reached the client yet, so another target may still serve it.
                failure.retryable = True
            ctx.attempt_failed(up.name, t.model, failure, started, usage)
            raise failure from None

    opened = await run(targets, attempt, ctx.rt.routing, deadline, tokens, hedge_after_s)
    await _relay(ctx, api, req, opened, send, receive, extra_headers)


async def _relay(
    ctx: RequestContext,
    api: ClientApi,
    req: ChatRequest,
    op: _Opened,
    send: Send,
    receive: Receive,
    extra_headers: Headers,
) -> None:
    up = op.target.upstream
    same = api.protocol in up.native
    relay = api.relay if same else None
    want_usage = bool((req.extras.get("stream_options") or {}).get("include_usage"))
    encoder = None if same else api.stream_encoder(ctx.model, include_usage=want_usage)
    strip_usage = same and api.protocol == "openai" and not want_usage
    usage: Usage | None = None
    text_parts: list[str] = []
    ttft: float | None = None
    ctx.provider, ctx.provider_model = up.name, op.target.model
    headers: Headers = [
        (b"content-type", b"text/event-stream; charset=utf-8"),
        (b"cache-control", b"no-cache"),
        *served_headers(ctx, extra_headers),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})

    gone = asyncio.Event()

    async def watch() -> None:
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                gone.set()
                return

    watcher = asyncio.create_task(watch())
    cut: UpstreamError | None = None

    async def emit(frame: SseFrame, doc: dict[str, Any] | None, evs: list[StreamEvent]) -> None:
        nonlocal usage, ttft
        for ev in evs:
            if isinstance(ev, UsageUpdate):
                usage = merge_usage(usage, ev.usage)
            elif isinstance(ev, TextDelta | ThinkingDelta):
                text_parts.append(ev.text)
            elif isinstance(ev, ToolArgsDelta):
                text_parts.append(ev.partial_json)
            if ttft is None and isinstance(ev, _CONTENT):
                ttft = time.perf_counter() - ctx.t0
        if encoder is not None:
            out = b"".join(encoder.encode(ev) for ev in evs)
        elif relay is not None:
            out = relay.frame(frame.raw, doc)
        elif strip_usage and doc is not None and doc.get("usage"):
            if doc.get("choices"):
                doc["usage"] = None
                out = b"data: " + _encode(doc) + b"\n\n"
            else:
                out = b""
        else:
            out = frame.raw
        if out:
            await send({"type": "http.response.body", "body": out, "more_body": True})

    try:
        for frame, doc, evs in op.pending:
            await emit(frame, doc, evs)
        async for frame in op.frames:
            if gone.is_set():
                break
            doc, evs = _frame_events(op.decoder, frame)
            await emit(frame, doc, evs)
        else:
            await emit(SseFrame(event=None, data=b"", raw=b""), None, op.decoder.finish())
    except _STREAM_ERRORS as exc:
        cut = map_exception(exc, streaming=True)
        if not isinstance(cut, UpstreamStreamCut):
            cut = UpstreamStreamCut(cut.message)
    finally:
        op.resp.release()
        watcher.cancel()

    estimated = False
    if usage is None or (usage.output_tokens == 0 and text_parts):
        est_out = count_text("".join(text_parts))
        base = usage or Usage(input_tokens=ctx.rt.estimate_prompt(req))
        usage = msgspec.structs.replace(base, output_tokens=est_out, source="estimated")
        estimated = True
    ctx.ttft_s = ttft
    if gone.is_set():
        ctx.attempt_ok(up.name, op.target.model, usage, op.started, ttft)
        ctx.finish(499, "DC")
        return
    if cut is not None:
        ctx.attempt_failed(up.name, op.target.model, cut, op.started, usage)
        ctx.usage, ctx.served_cost = usage, ctx.attempts[-1].cost_usd
        if encoder is not None:
            tail = encoder.error(cut.message)
        elif relay is not None:
            tail = relay.error(cut.message)
        else:
            tail = api.stream_encoder(ctx.model).error(cut.message)
        await send({"type": "http.response.body", "body": tail, "more_body": False})
        ctx.finish(200, "UC")
        return
    tail = b""
    if encoder is not None:
        tail = encoder.finish(usage)
    await send({"type": "http.response.body", "body": tail, "more_body": False})
    ctx.attempt_ok(up.name, op.target.model, usage, op.started, ttft)
    ctx.finish(200, "OK" if not estimated else "EST")

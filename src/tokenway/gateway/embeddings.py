"""OpenAI embeddings, served by any target whose provider offers embeddings."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec

from tokenway.domain.types import EmbeddingRequest, EmbeddingResponse, Usage
from tokenway.errors import BadRequest, TargetUnsuitable, UpstreamError
from tokenway.execution.failover import Target, run
from tokenway.execution.retry import Deadline
from tokenway.gateway.asgi import Send, respond
from tokenway.gateway.chat import BODY_ERRORS, served_headers, usage_only
from tokenway.gateway.context import RequestContext
from tokenway.providers.transport import map_exception
from tokenway.translate.embeddings import encode_openai_response

_decode = msgspec.json.decode
_encode = msgspec.json.encode


async def handle(
    ctx: RequestContext,
    req: EmbeddingRequest,
    raw: dict[str, Any],
    targets: list[Target],
    send: Send,
    deadline: Deadline,
) -> None:
    """Embed the request's inputs (`req`, parsed from the client's `raw` body) with the first
    target that answers."""

    async def attempt(t: Target, left: float) -> bytes:
        up = t.upstream
        same = up.kind == "openai"
        try:
            prep = up.adapter.embed(req, raw if same else None, t.model)
        except BadRequest as exc:
            raise TargetUnsuitable(f"{up.name}: {exc.message}") from None
        started = time.perf_counter()
        er: EmbeddingResponse | None = None
        try:
            async with asyncio.timeout(left):
                resp = await up.send(prep, t.label)
                try:
                    data = await resp.read()
                finally:
                    resp.release()
            if same:
                # Only usage is read: decoding every vector would cost the event loop dearly.
                head = usage_only.decode(data)
                u = head.usage or {}
                n = u.get("prompt_tokens") if isinstance(u, dict) else None
                tokens = n if isinstance(n, int) and n >= 0 else 0
                usage = Usage(input_tokens=tokens)
            else:
                doc = _decode(data)
                if not isinstance(doc, dict):
                    raise ValueError("not an object")
                er = up.adapter.parse_embeddings(doc, t.model, req)
                usage = er.usage
        except UpstreamError as err:
            ctx.attempt_failed(up.name, t.model, err, started, None)
            raise
        except (TimeoutError, OSError, *BODY_ERRORS) as exc:
            failure = map_exception(exc)
            ctx.attempt_failed(up.name, t.model, failure, started, None)
            raise failure from None
        ctx.attempt_ok(up.name, t.model, usage, started, None)
        if same or er is None:
            return data
        return _encode(encode_openai_response(er, ctx.model, req.encoding_format))

    body = await run(targets, attempt, ctx.rt.routing, deadline)
    await respond(
        send, 200, body, [(b"content-type", b"application/json"), *served_headers(ctx, [])]
    )
    ctx.finish(200, "OK")

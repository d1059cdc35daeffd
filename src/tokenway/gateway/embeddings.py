"""OpenAI embeddings, served by any target whose provider offers embeddings."""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import msgspec

from tokenway.errors import UpstreamError
from tokenway.execution.failover import Target, first_success
from tokenway.gateway.asgi import Send, respond
from tokenway.gateway.chat import served_headers
from tokenway.gateway.context import RequestContext
from tokenway.providers.transport import map_exception
from tokenway.translate.embeddings import encode_openai_response, parse_openai_request

_decode = msgspec.json.decode
_encode = msgspec.json.encode


async def handle(
    ctx: RequestContext, raw: dict[str, Any], targets: list[Target], send: Send
) -> None:
    """Embed the request's inputs with the first target that answers."""
    req = parse_openai_request(raw)

    async def attempt(t: Target) -> bytes:
        up = t.upstream
        same = up.kind == "openai"
        prep = up.adapter.embed(req, raw if same else None, t.model)
        started = time.perf_counter()
        try:
            resp = await up.send(prep)
            try:
                data = await resp.read()
            finally:
                resp.release()
            doc = _decode(data)
            if not isinstance(doc, dict):
                raise ValueError("not an object")
            er = up.adapter.parse_embeddings(doc, t.model, req)
        except UpstreamError as err:
            ctx.attempt_failed(up.name, t.model, err, started, None)
            raise
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError, KeyError, TypeError) as exc:
            failure = map_exception(exc)
            ctx.attempt_failed(up.name, t.model, failure, started, None)
            raise failure from None
        ctx.attempt_ok(up.name, t.model, er.usage, started, None)
        if same:
            return data
        return _encode(encode_openai_response(er, ctx.model, req.encoding_format))

    body = await first_success(targets, attempt, ctx.rt.retry_pause)
    await respond(
        send, 200, body, [(b"content-type", b"application/json"), *served_headers(ctx, [])]
    )
    ctx.finish(200, "OK")

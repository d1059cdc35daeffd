"""OpenAI's Batch API.

    POST /v1/batches                 `{"input_file_id", "endpoint", "completion_window",
                                     "metadata"?, "output_expires_after"?}`
    GET  /v1/batches                 newest first, `?limit=&after=`
    GET  /v1/batches/{id}
    POST /v1/batches/{id}/cancel

A batch belongs to the key that created it; another key gets 404. The work itself is done by
the replicas' batch runners (`batch.runner`).
"""

from __future__ import annotations

from typing import Any

import msgspec

from tokenway.batch.service import BatchService
from tokenway.domain.types import Principal
from tokenway.errors import BadRequest, NotFound
from tokenway.gateway.asgi import Receive, Scope, Send, read_body, respond
from tokenway.gateway.files import no_nul, query

__all__ = ["handle"]

_encode = msgspec.json.encode


async def handle(
    svc: BatchService,
    principal: Principal,
    scope: Scope,
    receive: Receive,
    send: Send,
    max_body: int,
) -> None:
    """Serve one request under `/v1/batches`."""
    method: str = scope["method"]
    parts = scope["path"].rstrip("/").split("/")[3:]  # after "", "v1", "batches"
    if parts:  # the id every store lookup below takes
        no_nul(parts[0], "batch_id")
    if not parts:
        if method == "POST":
            doc = _object(await read_body(scope, receive, max_body))
            return await respond(send, 200, _encode(await svc.create(principal, doc)))
        if method == "GET":
            q = query(scope)
            page = await svc.batches(principal, limit=q.get("limit"), after=q.get("after"))
            return await respond(send, 200, _encode(page))
    elif len(parts) == 1 and method == "GET":
        return await respond(send, 200, _encode(await svc.batch(principal, parts[0])))
    elif len(parts) == 2 and parts[1] == "cancel" and method == "POST":
        return await respond(send, 200, _encode(await svc.cancel(principal, parts[0])))
    raise NotFound(f"Unknown endpoint: {method} {scope['path']}")


def _object(body: bytes) -> dict[str, Any]:
    try:
        doc = msgspec.json.decode(body)
    except (ValueError, RecursionError):  # msgspec.DecodeError, or malformed UTF-8
        raise BadRequest("Request body is not valid JSON; expected a JSON object.") from None
    if not isinstance(doc, dict):
        raise BadRequest("Request body must be a JSON object.")
    file_id = doc.get("input_file_id")
    if isinstance(file_id, str):
        no_nul(file_id, "input_file_id")
    return doc
